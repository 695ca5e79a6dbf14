//! Line-oriented machine records: arithmetic, JSON lines and service logs.

use std::fmt::Write;

use rand::Rng;

use super::{chance, pick};

/// `37+48=85; 912-405=507; 7*8=56;` — results are always correct, so a model that learns the
/// carry rules predicts the digits after `=`; operands have 1–3 digits, products stay small.
pub(super) fn arith(rng: &mut impl Rng, target_bytes: usize) -> String {
    let mut out = String::with_capacity(target_bytes + 32);
    while out.len() < target_bytes {
        let (a, op, b, c) = match rng.random_range(0..5) {
            0 | 1 => {
                let (a, b) = (operand(rng), operand(rng));
                (a, '+', b, a + b)
            }
            2 | 3 => {
                let a = operand(rng);
                let b = rng.random_range(0..=a);
                (a, '-', b, a - b)
            }
            _ => {
                let (a, b) = (rng.random_range(0..100u32), rng.random_range(0..13u32));
                (a, '*', b, a * b)
            }
        };
        // Writing to a String cannot fail.
        let _ = write!(out, "{a}{op}{b}={c};");
        out.push(if chance(rng, 15) { '\n' } else { ' ' });
    }
    out
}

/// Uniform over the digit count first, so 1- and 2-digit operands are as common as 3-digit ones.
fn operand(rng: &mut impl Rng) -> u32 {
    match rng.random_range(0..3) {
        0 => rng.random_range(0..10),
        1 => rng.random_range(10..100),
        _ => rng.random_range(100..1000),
    }
}

const FIRST_NAMES: &[&str] = &[
    "alice", "bruno", "chen", "dana", "emil", "fatima", "goran", "hana", "ivan", "julia", "kenji",
    "lena", "mateo", "nadia", "oscar", "priya",
];
const CITIES: &[&str] = &[
    "paris", "lagos", "lima", "oslo", "pune", "osaka", "quito", "tunis", "turin", "seoul",
];
const SKU_PREFIXES: &[&str] = &["AB", "CX", "DK", "LM", "QR", "ZT"];
const EVENTS: &[&str] = &["click", "view", "scroll", "signup", "logout", "search"];
const PAGES: &[&str] = &[
    "/home",
    "/cart",
    "/search",
    "/profile",
    "/help",
    "/checkout",
];

/// One compact JSON object per line in one of three schemas. Ids increase down the document and
/// an order's `total` is the exact sum of `qty * price`, so there is arithmetic to learn too.
pub(super) fn json(rng: &mut impl Rng, target_bytes: usize) -> String {
    let mut out = String::with_capacity(target_bytes + 256);
    let mut id: u32 = rng.random_range(1000..9000);
    let mut ts: u64 = 1_700_000_000 + rng.random_range(0..10_000_000);
    while out.len() < target_bytes {
        id += rng.random_range(1..4);
        ts += rng.random_range(1..120);
        let _ = match rng.random_range(0..3) {
            0 => write!(
                out,
                r#"{{"id":{id},"name":"{}","age":{},"city":"{}","active":{}}}"#,
                pick(rng, FIRST_NAMES),
                rng.random_range(18..80),
                pick(rng, CITIES),
                chance(rng, 70),
            ),
            1 => {
                let user = rng.random_range(1000..9000);
                let mut items = String::new();
                let mut total_cents = 0u32;
                for i in 0..rng.random_range(1..4) {
                    let qty = rng.random_range(1..5u32);
                    let cents = rng.random_range(100..5000u32);
                    total_cents += qty * cents;
                    let sep = if i > 0 { "," } else { "" };
                    let sku = pick(rng, SKU_PREFIXES);
                    let num = rng.random_range(100..1000);
                    let _ = write!(
                        items,
                        r#"{sep}{{"sku":"{sku}-{num}","qty":{qty},"price":{}}}"#,
                        money(cents)
                    );
                }
                write!(
                    out,
                    r#"{{"order_id":{id},"user_id":{user},"items":[{items}],"total":{}}}"#,
                    money(total_cents)
                )
            }
            _ => write!(
                out,
                r#"{{"event":"{}","ts":{ts},"page":"{}","duration_ms":{}}}"#,
                pick(rng, EVENTS),
                pick(rng, PAGES),
                rng.random_range(5..5000),
            ),
        };
        out.push('\n');
    }
    out
}

/// Cents as a decimal string with exactly two places; integer maths avoids float formatting.
fn money(cents: u32) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

const SERVICES: &[&str] = &["api", "auth", "web", "billing", "search"];
const ERRORS: &[&str] = &[
    "connection reset by peer",
    "upstream timeout",
    "database is locked",
    "out of memory",
    "invalid token",
];
/// Requests by (method, path template) where `{}` takes an id.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/users/{}"),
    ("GET", "/api/v1/orders/{}"),
    ("POST", "/api/v1/orders"),
    ("PUT", "/api/v1/users/{}"),
    ("DELETE", "/api/v1/sessions/{}"),
    ("POST", "/login"),
    ("GET", "/health"),
    ("GET", "/static/app.js"),
];

/// `2024-03-15 12:34:56.789 INFO  [api] 10.0.3.17 "GET /api/v1/users/42" 200 13ms`.
/// Timestamps only move forward, a handful of client IPs recur within a document, and the
/// status code agrees with the level (INFO 2xx/3xx, WARN 4xx, ERROR 5xx).
pub(super) fn logs(rng: &mut impl Rng, target_bytes: usize) -> String {
    let mut out = String::with_capacity(target_bytes + 128);
    let mut month = rng.random_range(1..=12u32);
    let mut day = rng.random_range(1..=20u32);
    let mut millis: u64 = rng.random_range(0..86_400_000);
    let clients: Vec<String> = (0..rng.random_range(3..7))
        .map(|_| match rng.random_range(0..3) {
            0 => format!(
                "10.0.{}.{}",
                rng.random_range(0..8),
                rng.random_range(2..255)
            ),
            1 => format!("192.168.1.{}", rng.random_range(2..255)),
            _ => format!(
                "172.16.{}.{}",
                rng.random_range(0..4),
                rng.random_range(2..255)
            ),
        })
        .collect();

    while out.len() < target_bytes {
        millis += rng.random_range(0..3000);
        if millis >= 86_400_000 {
            millis -= 86_400_000;
            day += 1;
            // Every month has a 28th; only documents of many megabytes get this far.
            if day > 28 {
                day = 1;
                month = month % 12 + 1;
            }
        }
        let (h, m, s, ms) = (
            millis / 3_600_000,
            millis / 60_000 % 60,
            millis / 1000 % 60,
            millis % 1000,
        );
        let _ = write!(
            out,
            "2024-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{ms:03} "
        );

        let level = rng.random_range(0..100);
        if level < 15 {
            let key = rng.random_range(1..500);
            let outcome = if chance(rng, 80) { "hit" } else { "miss" };
            let _ = write!(out, "DEBUG [cache] key=user:{key} {outcome}");
        } else {
            let (label, statuses): (&str, &[u32]) = match level {
                0..=79 => ("INFO ", &[200, 200, 200, 201, 204, 304]),
                80..=93 => ("WARN ", &[400, 401, 403, 404, 404, 429]),
                _ => ("ERROR", &[500, 502, 503]),
            };
            let (method, route) = pick(rng, ROUTES);
            let path = route.replace("{}", &rng.random_range(1..10_000).to_string());
            let _ = write!(
                out,
                "{label} [{}] {} \"{method} {path}\" {} {}ms",
                pick(rng, SERVICES),
                clients[rng.random_range(0..clients.len())],
                pick(rng, statuses),
                rng.random_range(1..900),
            );
            if label == "ERROR" {
                let _ = write!(out, " error=\"{}\"", pick(rng, ERRORS));
            }
        }
        out.push('\n');
    }
    out
}
