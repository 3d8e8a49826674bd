//! Evaluation plots, as PNG and SVG: the DET curve and score histograms.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::metrics::Roc;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).ok();
    });
}

/// Inverse of the standard normal CDF (Acklam's rational approximation,
/// relative error below 1.2e-9), for the DET curve's probit axes. Written out
/// because it is the only statistical function the project needs.
pub fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Grid lines of the DET plot, as error rates.
const DET_TICKS: [f64; 9] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4];
/// Extent of both DET axes, as error rates.
const DET_RANGE: (f64, f64) = (0.0005, 0.6);

fn det_on<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curves: &[(&str, &Roc)]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (lo, hi) = (probit(DET_RANGE.0), probit(DET_RANGE.1));
    let mut chart = ChartBuilder::on(root)
        .caption("DET curve", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(lo..hi, lo..hi)
        .map_err(|e| anyhow!("{e:?}"))?;
    // Probit axes: grid lines and labels at fixed error rates.
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_desc("False acceptance rate (%)")
        .y_desc("False rejection rate (%)")
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    let grid = BLACK.mix(0.15);
    for &t in &DET_TICKS {
        let v = probit(t);
        chart.draw_series(LineSeries::new(vec![(v, lo), (v, hi)], grid)).map_err(|e| anyhow!("{e:?}"))?;
        chart.draw_series(LineSeries::new(vec![(lo, v), (hi, v)], grid)).map_err(|e| anyhow!("{e:?}"))?;
        let label = format!("{}", t * 100.0);
        let (x, y) = chart.backend_coord(&(v, lo));
        root.draw(&Text::new(label.clone(), (x - 8, y + 8), ("sans-serif", 13))).map_err(|e| anyhow!("{e:?}"))?;
        let (x, y) = chart.backend_coord(&(lo, v));
        root.draw(&Text::new(label, (x - 40, y - 7), ("sans-serif", 13))).map_err(|e| anyhow!("{e:?}"))?;
    }
    chart.draw_series(LineSeries::new(vec![(lo, lo), (hi, hi)], BLACK.mix(0.3))).map_err(|e| anyhow!("{e:?}"))?;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (i, (name, roc)) in curves.iter().enumerate() {
        let color = colors[i % colors.len()];
        // Points beyond the axes (e.g. zero error rates) sit on the border.
        let pts: Vec<(f64, f64)> = roc
            .fpr
            .iter()
            .zip(roc.fnr())
            .map(|(&fa, fr)| (probit(fa).clamp(lo, hi), probit(fr).clamp(lo, hi)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend_and_present(&mut chart, root)
}

/// Draws the series legend in a framed box and writes the plot out.
fn legend_and_present<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    root: &DrawingArea<DB, Shift>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

fn hist_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    scores: &[f64],
    labels: &[bool],
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (mut lo, mut hi) = scores.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &s| (a.min(s), b.max(s)));
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        lo -= 0.5;
        hi += 0.5;
    }
    let bins = 60usize;
    let width = (hi - lo) / bins as f64;
    let density = |want: bool| -> Vec<f64> {
        let mut h = vec![0.0; bins];
        let n = labels.iter().filter(|&&l| l == want).count().max(1) as f64;
        for (s, &l) in scores.iter().zip(labels) {
            if l == want {
                let b = (((s - lo) / width) as usize).min(bins - 1);
                h[b] += 1.0 / (n * width);
            }
        }
        h
    };
    let (tar, non) = (density(true), density(false));
    let ymax = tar.iter().chain(&non).cloned().fold(0.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(lo..hi, 0.0..ymax.max(1e-9))
        .map_err(|e| anyhow!("{e:?}"))?;
    // Major grid lines only: the minor ones crowd the bars.
    chart
        .configure_mesh()
        .x_desc("score")
        .y_desc("density")
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (h, color, name) in [(&non, RED, "non-target"), (&tar, BLUE, "target")] {
        chart
            .draw_series(h.iter().enumerate().map(|(i, &v)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, v)], color.mix(0.4).filled())
            }))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.mix(0.4).filled()));
    }
    legend_and_present(&mut chart, root)
}

/// Writes `STEM.png` and `STEM.svg` of the DET curves.
pub fn det(stem: &Path, curves: &[(&str, &Roc)]) -> Result<()> {
    register_font();
    let png = stem.with_extension("png");
    det_on(&BitMapBackend::new(&png, (800, 640)).into_drawing_area(), curves).with_context(|| written(&png))?;
    let svg = stem.with_extension("svg");
    let area = SVGBackend::new(&svg, (800, 640)).into_drawing_area();
    det_on(&area, curves).with_context(|| written(&svg))
}

fn written(path: &Path) -> String {
    format!("cannot write the plot {}", path.display())
}

/// Writes `STEM.png` and `STEM.svg`: target and non-target score densities.
pub fn histogram(stem: &Path, scores: &[f64], labels: &[bool], title: &str) -> Result<()> {
    register_font();
    let png = stem.with_extension("png");
    hist_on(&BitMapBackend::new(&png, (800, 500)).into_drawing_area(), scores, labels, title)
        .with_context(|| written(&png))?;
    let svg = stem.with_extension("svg");
    let area = SVGBackend::new(&svg, (800, 500)).into_drawing_area();
    hist_on(&area, scores, labels, title).with_context(|| written(&svg))
}

fn panels_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    panels: &[(&str, Vec<(f64, f64)>)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| anyhow!("{e:?}"))?;
    let cols = 2;
    let rows = panels.len().div_ceil(cols).max(1);
    let areas = root.split_evenly((rows, cols));
    for ((name, pts), area) in panels.iter().zip(areas.iter()) {
        let pts: Vec<(f64, f64)> = pts.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (x0, x1) = if pts.is_empty() {
            (0.0, 1.0)
        } else if x1 > x0 {
            (x0, x1)
        } else {
            (x0 - 0.5, x1 + 0.5)
        };
        let (y0, y1) = if pts.is_empty() {
            (0.0, 1.0)
        } else if y1 > y0 {
            (y0, y1)
        } else {
            (y0 - 0.5, y1 + 0.5)
        };
        let pad = (y1 - y0) * 0.05;
        let mut chart = ChartBuilder::on(area)
            .caption(*name, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| anyhow!("{e:?}"))?;
        chart.configure_mesh().x_desc("epoch").draw().map_err(|e| anyhow!("{e:?}"))?;
        chart.draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(2))).map_err(|e| anyhow!("{e:?}"))?;
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, BLUE.filled()))).map_err(|e| anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Writes `STEM.png` and `STEM.svg` with one line chart per panel.
pub fn panels(stem: &Path, title: &str, panels: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    register_font();
    let png = stem.with_extension("png");
    panels_on(&BitMapBackend::new(&png, (1000, 700)).into_drawing_area(), title, panels)
        .with_context(|| written(&png))?;
    let svg = stem.with_extension("svg");
    let area = SVGBackend::new(&svg, (1000, 700)).into_drawing_area();
    panels_on(&area, title, panels).with_context(|| written(&svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probit_matches_normal_quantiles() {
        for (p, z) in
            [(0.5, 0.0), (0.975, 1.959963985), (0.1, -1.281551566), (0.001, -3.090232306), (0.999, 3.090232306)]
        {
            assert!((probit(p) - z).abs() < 1e-6, "{p}: {} vs {z}", probit(p));
        }
    }
}
