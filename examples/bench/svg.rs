//! A hand-written SVG chart (no plotting crate): throughput by payload size, client against the
//! raw writer, and latency percentiles. Both panels use log-scale y axes because the values
//! span decades (64 B messages go a hundred times faster than 64 KiB ones).

use std::fmt::Write as _;

/// One payload size: median msgs/s of the client and of the raw writer.
pub struct ThroughputBar {
    pub label: String,
    pub client: f64,
    pub raw: f64,
}

/// One latency series: p50, p99 and max in microseconds.
pub struct LatencyBar {
    pub label: String,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

const W: f64 = 960.0;
const H: f64 = 440.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 370.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Log-scale mapping of `v` in `[lo, hi]` to a y coordinate.
fn y_of(v: f64, lo: f64, hi: f64) -> f64 {
    let v = v.max(lo);
    let t = (v.log10() - lo.log10()) / (hi.log10() - lo.log10());
    BOTTOM - t * (BOTTOM - TOP)
}

fn decades(min: f64, max: f64) -> (f64, f64) {
    let lo = 10f64.powf(min.max(1e-3).log10().floor());
    let hi = 10f64.powf(max.max(lo * 10.0).log10().ceil());
    (lo, hi)
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn axis(out: &mut String, x0: f64, x1: f64, lo: f64, hi: f64, unit: &str) {
    let mut d = lo;
    while d <= hi * 1.0001 {
        let y = y_of(d, lo, hi);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            x0 - 4.0,
            y + 4.0,
            human(d)
        );
        d *= 10.0;
    }
    let _ = writeln!(
        out,
        r##"<text x="{x0}" y="{:.1}" font-size="11" fill="#555">{}</text>"##,
        TOP - 10.0,
        esc(unit)
    );
}

/// Renders the chart; `title` goes on top, `note` under the panels.
pub fn render(
    title: &str,
    note: &str,
    bars: &[ThroughputBar],
    lat: &[LatencyBar],
    lat_target_us: f64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"##
    );
    let _ = writeln!(out, r##"<rect width="{W}" height="{H}" fill="white"/>"##);
    let _ = writeln!(
        out,
        r##"<text x="{:.0}" y="24" font-size="16" text-anchor="middle">{}</text>"##,
        W / 2.0,
        esc(title)
    );

    // Left panel: throughput.
    let (x0, x1) = (70.0, 520.0);
    let vals: Vec<f64> = bars
        .iter()
        .flat_map(|b| [b.client, b.raw])
        .filter(|v| *v > 0.0)
        .collect();
    let (lo, hi) = decades(
        vals.iter().copied().fold(f64::INFINITY, f64::min),
        vals.iter().copied().fold(0.0, f64::max),
    );
    axis(&mut out, x0, x1, lo, hi, "messages/s (log), median of runs");
    let group = (x1 - x0) / bars.len().max(1) as f64;
    for (i, b) in bars.iter().enumerate() {
        let gx = x0 + group * i as f64;
        let bw = group * 0.32;
        for (j, (v, color)) in [(b.raw, "#9aa5b1"), (b.client, "#2b6cb0")]
            .iter()
            .enumerate()
        {
            let x = gx + group * 0.14 + j as f64 * (bw + 4.0);
            let y = y_of(*v, lo, hi);
            let _ = writeln!(
                out,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
                (BOTTOM - y).max(0.0),
                x + bw / 2.0,
                y - 3.0,
                human(*v)
            );
        }
        let ratio = if b.raw > 0.0 { b.client / b.raw } else { 0.0 };
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#2b6cb0">{ratio:.2}x raw</text>"##,
            gx + group / 2.0,
            BOTTOM + 16.0,
            esc(&b.label),
            gx + group / 2.0,
            BOTTOM + 30.0
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{:.0}" width="10" height="10" fill="#9aa5b1"/><text x="{:.0}" y="{:.0}" font-size="11">raw pipelined writer</text><rect x="{:.0}" y="{:.0}" width="10" height="10" fill="#2b6cb0"/><text x="{:.0}" y="{:.0}" font-size="11">client (PublishBatch, memory store)</text>"##,
        BOTTOM + 40.0,
        x0 + 14.0,
        BOTTOM + 49.0,
        x0 + 150.0,
        BOTTOM + 40.0,
        x0 + 164.0,
        BOTTOM + 49.0
    );

    // Right panel: latency percentiles.
    let (x0, x1) = (620.0, 930.0);
    let vals: Vec<f64> = lat
        .iter()
        .flat_map(|l| [l.p50, l.p99, l.max])
        .chain([lat_target_us])
        .filter(|v| *v > 0.0)
        .collect();
    let (lo, hi) = decades(
        vals.iter().copied().fold(f64::INFINITY, f64::min),
        vals.iter().copied().fold(0.0, f64::max),
    );
    axis(&mut out, x0, x1, lo, hi, "microseconds (log)");
    let ty = y_of(lat_target_us, lo, hi);
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{ty:.1}" x2="{x1}" y2="{ty:.1}" stroke="#c53030" stroke-dasharray="4 3"/><text x="{x1}" y="{:.1}" font-size="10" text-anchor="end" fill="#c53030">p99 target {}</text>"##,
        ty - 3.0,
        human(lat_target_us)
    );
    let group = (x1 - x0) / lat.len().max(1) as f64;
    let colors = ["#68d391", "#dd6b20", "#742a2a"];
    for (i, l) in lat.iter().enumerate() {
        let gx = x0 + group * i as f64;
        let bw = group * 0.22;
        for (j, v) in [l.p50, l.p99, l.max].iter().enumerate() {
            let x = gx + group * 0.1 + j as f64 * (bw + 2.0);
            let y = y_of(*v, lo, hi);
            let _ = writeln!(
                out,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"##,
                (BOTTOM - y).max(0.0),
                colors[j],
                x + bw / 2.0,
                y - 3.0,
                human(*v)
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            gx + group / 2.0,
            BOTTOM + 16.0,
            esc(&l.label)
        );
    }
    for (j, name) in ["p50", "p99", "max"].iter().enumerate() {
        let x = x0 + j as f64 * 60.0;
        let _ = writeln!(
            out,
            r##"<rect x="{x:.0}" y="{:.0}" width="10" height="10" fill="{}"/><text x="{:.0}" y="{:.0}" font-size="11">{name}</text>"##,
            BOTTOM + 40.0,
            colors[j],
            x + 14.0,
            BOTTOM + 49.0
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.0}" y="{:.0}" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
        W / 2.0,
        H - 8.0,
        esc(note)
    );
    out.push_str("</svg>\n");
    out
}
