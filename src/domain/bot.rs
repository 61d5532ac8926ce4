//! Known bots and link-preview fetchers: their clicks are kept, flagged
//! `bot = true`, and never used for attribution. (Clicks of a flood from one
//! address get the same flag: `flood.rs`.)

const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "crawl",
    "slurp",
    "facebookexternalhit",
    "facebookcatalog",
    "embedly",
    "quora link preview",
    "whatsapp",
    "telegram",
    "discord",
    "slack",
    "skypeuripreview",
    "vkshare",
    "pinterest",
    "redditbot",
    "linkedinbot",
    "iframely",
    "bitlybot",
    "outbrain",
    "preview",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "java/",
    "libwww-perl",
    "httpclient",
    "axios/",
    "node-fetch",
    "lighthouse",
    "pingdom",
    "uptimerobot",
    "monitor",
];

/// Whether a user agent belongs to a bot or a link-preview fetcher. A
/// missing user agent counts as a bot: every browser sends one.
pub fn is_bot(user_agent: Option<&str>) -> bool {
    let Some(ua) = user_agent.map(str::trim).filter(|u| !u.is_empty()) else {
        return true;
    };
    let ua = ua.to_ascii_lowercase();
    BOT_MARKERS.iter().any(|m| ua.contains(m))
}

#[cfg(test)]
mod tests {
    use super::is_bot;

    #[test]
    fn browsers_are_not_bots() {
        assert!(!is_bot(Some(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
        )));
        assert!(!is_bot(Some(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
        )));
    }

    #[test]
    fn crawlers_and_link_previews_are_bots() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "Twitterbot/1.0",
            "WhatsApp/2.23.20.0",
            "TelegramBot (like TwitterBot)",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "curl/8.5.0",
        ] {
            assert!(is_bot(Some(ua)), "{ua} should be a bot");
        }
    }

    #[test]
    fn a_missing_user_agent_is_a_bot() {
        assert!(is_bot(None));
        assert!(is_bot(Some("  ")));
    }
}
