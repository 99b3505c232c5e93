//! SVG charts for RESULTS.md, written by hand (no plotting dependency): horizontal bars on a
//! log₁₀ axis, since the systems differ by orders of magnitude.

use std::fmt::Write;

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

/// `1234567.0` → `1,234,567` (rounded).
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn decade_label(e: i32) -> String {
    match e {
        i32::MIN..=-1 => format!("1e{e}"),
        0..=2 => 10f64.powi(e).to_string(),
        3..=5 => format!("{}k", 10f64.powi(e - 3)),
        6..=8 => format!("{}M", 10f64.powi(e - 6)),
        _ => format!("1e{e}"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar chart: one block of bars per category (system), one bar per series, on a
/// log₁₀ axis. `values[c][s]` is series `s` of category `c`; `None` or ≤ 0 draws "n/a".
pub fn hbar_log(
    title: &str,
    unit: &str,
    categories: &[String],
    series: &[&str],
    values: &[Vec<Option<f64>>],
) -> String {
    let (left, right, top, bar_h, gap) = (120.0, 90.0, 64.0, 13.0, 14.0);
    let width = 900.0;
    let plot_w = width - left - right;
    let block = series.len() as f64 * bar_h + gap;
    let height = top + categories.len() as f64 * block + 40.0;
    let finite: Vec<f64> = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(0.0, f64::max);
    let (e_lo, e_hi) = if finite.is_empty() {
        (0, 1)
    } else {
        let a = lo.log10().floor() as i32;
        let b = (hi.log10().ceil() as i32).max(a + 1);
        (a, b)
    };
    let x = |v: f64| left + (v.log10() - e_lo as f64) / (e_hi - e_lo) as f64 * plot_w;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" font-size="15" font-weight="bold" text-anchor="middle">{}</text>
"#,
        width / 2.0,
        esc(title)
    );
    // Legend.
    let mut lx = left;
    for (i, name) in series.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="32" width="12" height="12" fill="{}"/><text x="{}" y="42">{}</text>"#,
            COLORS[i % COLORS.len()],
            lx + 16.0,
            esc(name)
        );
        lx += 24.0 + 7.0 * name.chars().count() as f64;
    }
    // Decade grid and axis labels.
    let bottom = height - 40.0;
    for e in e_lo..=e_hi {
        let gx = x(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{gx}" y1="{top}" x2="{gx}" y2="{bottom}" stroke="#ddd"/><text x="{gx}" y="{}" text-anchor="middle">{}</text>"##,
            bottom + 15.0,
            decade_label(e)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{} (log scale)</text>"#,
        left + plot_w / 2.0,
        bottom + 32.0,
        esc(unit)
    );
    for (c, cat) in categories.iter().enumerate() {
        let y0 = top + c as f64 * block;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" font-weight="bold">{}</text>"#,
            left - 8.0,
            y0 + series.len() as f64 * bar_h / 2.0 + 4.0,
            esc(cat)
        );
        for (i, _) in series.iter().enumerate() {
            let y = y0 + i as f64 * bar_h;
            match values.get(c).and_then(|v| v.get(i)).copied().flatten() {
                Some(v) if v.is_finite() && v > 0.0 => {
                    let w = (x(v) - left).max(1.0);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{left}" y="{y}" width="{w:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}" font-size="10">{}</text>"#,
                        bar_h - 2.0,
                        COLORS[i % COLORS.len()],
                        left + w + 4.0,
                        y + bar_h - 3.5,
                        thousands(v)
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{}" y="{}" font-size="10" fill="#888">n/a</text>"##,
                        left + 4.0,
                        y + bar_h - 3.5
                    );
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_and_draws_every_bar() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(f64::NAN), "–");
        assert_eq!(decade_label(3), "1k");
        assert_eq!(decade_label(6), "1M");
        let svg = hbar_log(
            "t",
            "events/s",
            &["a".into(), "b<".into()],
            &["x", "y"],
            &[vec![Some(10.0), None], vec![Some(1e6), Some(5.0)]],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        // Bars are 11 px high (legend swatches 12): three values, one "n/a".
        assert_eq!(svg.matches("height=\"11\"").count(), 3);
        assert!(svg.contains("n/a") && svg.contains("b&lt;") && svg.contains("1,000,000"));
    }
}
