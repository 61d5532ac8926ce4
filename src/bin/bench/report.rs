//! The figures of one run, the machine they were measured on, and the
//! markdown table printed at the end.

use std::process::Command;

use crate::Sizes;

pub struct Figure {
    pub name: String,
    pub value: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    /// `None`: reported, not targeted.
    pub pass: Option<bool>,
}

pub struct Report {
    started: chrono::DateTime<chrono::Utc>,
    header: Vec<String>,
    figures: Vec<Figure>,
    notes: Vec<String>,
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Report {
    pub fn new(sizes: &Sizes, args: &[String]) -> Self {
        let started = chrono::Utc::now();
        let mem = command_output("free", &["-h"]);
        let mem_total = mem
            .lines()
            .find(|l| l.starts_with("Mem:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string();
        let header = vec![
            format!("date: {}", started.format("%Y-%m-%d %H:%M UTC")),
            format!(
                "command: cargo run --release --bin bench --{}{}",
                if args.is_empty() { "" } else { " " },
                args.join(" ")
            ),
            format!(
                "mode: {}",
                if sizes.quick {
                    "--quick (small sizes: a smoke check, not the figures)"
                } else {
                    "full"
                }
            ),
            format!(
                "machine: nproc {}, memory {mem_total}, CPU {}",
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                cpu_model()
            ),
            format!(
                "git: {}",
                command_output("git", &["rev-parse", "--short", "HEAD"])
            ),
            format!("load average at start: {}", loadavg()),
        ];
        Self {
            started,
            header,
            figures: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn add(&mut self, f: Figure) {
        eprintln!(
            "   {}: {} (baseline {}, ratio {}) target {} {}",
            f.name,
            f.value,
            f.baseline,
            f.ratio,
            f.target,
            match f.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            }
        );
        self.figures.push(f);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("   note: {note}");
        self.notes.push(note);
    }

    pub fn failure(&mut self, section: &str, error: &str) {
        self.notes.push(format!("{section}: FAILED: {error}"));
    }

    pub fn finish(&mut self) {
        let took = chrono::Utc::now() - self.started;
        self.header
            .push(format!("load average at end: {}", loadavg()));
        self.header.push(format!("took: {} s", took.num_seconds()));
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for h in &self.header {
            out.push_str(&format!("- {h}\n"));
        }
        out.push_str("\n| figure | measured | baseline (same run) | ratio | target | |\n");
        out.push_str("| --- | --- | --- | --- | --- | --- |\n");
        for f in &self.figures {
            let verdict = match f.pass {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                f.name, f.value, f.baseline, f.ratio, f.target, verdict
            ));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}
