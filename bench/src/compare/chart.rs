//! The comparison chart (SVG, no dependencies): p50 round trip and calls/s at 256 in flight,
//! one bar per system and mode, floors first.

use std::fmt::Write as _;

use super::Rpc;
use crate::stats::Samples;

const W: f64 = 960.0;
const LABEL: f64 = 330.0;
const BAR: f64 = 18.0;
const GAP: f64 = 6.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel of horizontal bars starting at `y`; returns the y below it.
fn panel(out: &mut String, y: f64, title: &str, bars: &[(String, f64, &str)], unit: &str) -> f64 {
    let _ = writeln!(
        out,
        r#"<text x="10" y="{:.0}" font-size="15" font-weight="bold">{}</text>"#,
        y + 16.0,
        esc(title)
    );
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9);
    let span = W - LABEL - 120.0;
    let mut y = y + 28.0;
    for (label, v, color) in bars {
        let w = (v / max * span).max(1.0);
        let _ = writeln!(
            out,
            r#"<text x="{:.0}" y="{:.0}" font-size="12" text-anchor="end">{}</text><rect x="{LABEL:.0}" y="{y:.0}" width="{w:.1}" height="{BAR:.0}" fill="{color}"/><text x="{:.0}" y="{:.0}" font-size="12">{v:.2} {unit}</text>"#,
            LABEL - 8.0,
            y + 13.0,
            esc(label),
            LABEL + w + 6.0,
            y + 13.0,
        );
        y += BAR + GAP;
    }
    y + 10.0
}

fn color(system: &str) -> &'static str {
    match system {
        "Netron" => "#2b6cb0",
        "tonic" => "#c05621",
        "tarpc" => "#2f855a",
        _ => "#718096",
    }
}

/// The SVG document.
pub(crate) fn render(floors: &[(&str, Samples)], rpcs: &[Rpc]) -> String {
    let mut lat: Vec<(String, f64, &str)> = floors
        .iter()
        .take(2)
        .map(|(n, s)| {
            (
                format!("floor: {n}"),
                s.clone().percentile(50.0) as f64 / 1e3,
                "#a0aec0",
            )
        })
        .collect();
    lat.extend(rpcs.iter().map(|r| {
        (
            format!("{} {}", r.system, r.mode),
            r.lat.clone().percentile(50.0) as f64 / 1e3,
            color(r.system),
        )
    }));
    let rate: Vec<(String, f64, &str)> = rpcs
        .iter()
        .map(|r| {
            (
                format!("{} {}", r.system, r.mode),
                r.rates[2] / 1e6,
                color(r.system),
            )
        })
        .collect();
    let h = 2.0 * 48.0 + (lat.len() + rate.len()) as f64 * (BAR + GAP) + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W:.0}" height="{h:.0}" viewBox="0 0 {W:.0} {h:.0}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
    );
    let y = panel(
        &mut out,
        4.0,
        "Unary 64-byte round trip over TCP loopback, p50 (lower is better)",
        &lat,
        "µs",
    );
    panel(
        &mut out,
        y,
        "Pipelined calls/s, 256 in flight, one TCP connection (higher is better)",
        &rate,
        "M/s",
    );
    out.push_str("</svg>\n");
    out
}
