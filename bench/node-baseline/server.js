// The Node.js baseline of BENCHMARKS.md: what a typical webhook receiver
// built on Stripe's official library looks like. For each POST it verifies
// the signature with stripe.webhooks.constructEvent, stores the raw event
// and, for a paid invoice or checkout session, a conversion row, in one
// better-sqlite3 transaction (WAL, synchronous=NORMAL: no fsync per commit).
'use strict';

const http = require('node:http');
const Stripe = require('stripe');
const Database = require('better-sqlite3');

const port = Number(process.env.PORT || 8090);
const secret = process.env.WEBHOOK_SECRET;
const dbPath = process.env.DB_PATH || 'node-baseline.db';
if (!secret) {
  console.error('WEBHOOK_SECRET is required');
  process.exit(2);
}

// constructEvent needs no API key and no network.
const stripe = new Stripe('sk_test_unused');
const db = new Database(dbPath);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec(`
  CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, body TEXT NOT NULL, received_at INTEGER NOT NULL
  );
  CREATE TABLE IF NOT EXISTS conversions (
    purchase_key TEXT PRIMARY KEY, event_id TEXT NOT NULL, customer TEXT, email TEXT,
    amount INTEGER NOT NULL, currency TEXT NOT NULL, link_slug TEXT, created_at INTEGER NOT NULL
  );
`);
const insertEvent = db.prepare(
  'INSERT INTO events (id, type, body, received_at) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO NOTHING'
);
const insertConversion = db.prepare(
  `INSERT INTO conversions (purchase_key, event_id, customer, email, amount, currency, link_slug, created_at)
   VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(purchase_key) DO NOTHING`
);

const store = db.transaction((event, raw, now) => {
  const stored = insertEvent.run(event.id, event.type, raw, now);
  if (stored.changes === 0) return; // a duplicate delivery
  const o = event.data.object;
  if (event.type === 'invoice.paid') {
    const meta = (o.parent && o.parent.subscription_details && o.parent.subscription_details.metadata) || {};
    insertConversion.run(o.id, event.id, o.customer, o.customer_email, o.amount_paid, o.currency,
      meta.link_slug || null, now);
  } else if (event.type === 'checkout.session.completed' && o.payment_status === 'paid') {
    const email = o.customer_details ? o.customer_details.email : null;
    insertConversion.run(o.payment_intent || o.id, event.id, o.customer, email, o.amount_total,
      o.currency, (o.metadata && o.metadata.link_slug) || o.client_reference_id || null, now);
  }
});

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || !req.url.startsWith('/webhooks/stripe')) {
    return reply(res, 404, { error: 'not found' });
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    let event;
    try {
      event = stripe.webhooks.constructEvent(raw, req.headers['stripe-signature'], secret);
    } catch (err) {
      return reply(res, 400, { error: err.message });
    }
    try {
      store(event, raw.toString('utf8'), Date.now());
    } catch (err) {
      return reply(res, 503, { error: 'not stored' });
    }
    reply(res, 200, { received: true });
  });
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
