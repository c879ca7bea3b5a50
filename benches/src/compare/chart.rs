//! The latency chart: every server's percentile curve on one SVG.
//!
//! The x axis stretches the tail the way HdrHistogram plots do: a point at percentile p sits at
//! log10(1/(1−p)), so 90%, 99%, 99.9% ... are evenly spaced. The y axis is log-scaled latency,
//! drawn as log10(µs) on a linear axis so its ticks can be placed and labelled here.

use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;

use super::loadgen_report::SpectrumPoint;
use super::markdown::format_rate;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 650;
/// The x axis always reaches 99.999%, and further only when the data does, up to 99.99999%.
const MIN_X_DECADES: f64 = 5.0;
const MAX_X_DECADES: f64 = 7.0;
/// Colours far enough apart to tell six lines apart (matplotlib's tab10).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A linear axis whose ticks are exactly the given values (plotters' own `with_key_points` on
/// an f64 range loses the ability to format labels).
#[derive(Debug, Clone)]
struct TickedAxis {
    span: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.span.start) / (self.span.end - self.span.start);
        let pixels = f64::from(limit.1 - limit.0);
        limit.0 + (pixels * fraction).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Light (minor) grid lines would only add clutter between the chosen ticks.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.span.clone()
    }
}

/// One server's line.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyCurve {
    /// Legend text.
    pub label: String,
    /// (x position from [`percentile_position`], latency µs), ascending in x.
    pub points: Vec<(f64, f64)>,
}

impl LatencyCurve {
    /// The plottable points of a loadgen spectrum: the 100th percentile has no finite x and a
    /// zero latency none on a log axis, so both are left out.
    pub fn from_spectrum(label: impl Into<String>, spectrum: &[SpectrumPoint]) -> LatencyCurve {
        LatencyCurve {
            label: label.into(),
            points: spectrum
                .iter()
                .filter(|point| point.value_us > 0.0)
                .filter_map(|point| Some((percentile_position(point.percentile)?, point.value_us)))
                .filter(|&(x, _)| x <= MAX_X_DECADES)
                .collect(),
        }
    }
}

/// x position of quantile `p` (0..1): log10(1/(1−p)); `None` for p ≥ 1.
pub fn percentile_position(p: f64) -> Option<f64> {
    (0.0..1.0).contains(&p).then(|| (1.0 / (1.0 - p)).log10())
}

/// The x tick positions: 50%, then 90%, 99%, 99.9% ... up to `decades` nines.
pub fn percentile_ticks(decades: u32) -> Vec<f64> {
    let mut ticks = vec![2f64.log10()];
    ticks.extend((1..=decades).map(f64::from));
    ticks
}

/// The label of an x tick: `50%`, `90%`, `99%`, `99.9%`, ...
pub fn percentile_tick_label(x: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-x));
    let nines = x.round();
    if (x - nines).abs() < 1e-9 && nines >= 1.0 {
        let decimals = (nines as usize).saturating_sub(2);
        format!("{percent:.decimals$}%")
    } else {
        format!("{percent:.0}%")
    }
}

/// 1-2-5 latency ticks (µs) inside [lo, hi], or only powers of ten over a wide range.
pub fn latency_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let first_decade = lo.log10().floor() as i32;
    let last_decade = hi.log10().ceil() as i32;
    let steps: &[f64] = if last_decade - first_decade > 4 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    (first_decade..=last_decade)
        .flat_map(|decade| steps.iter().map(move |step| step * 10f64.powi(decade)))
        .filter(|tick| (lo..=hi).contains(tick))
        .collect()
}

/// A y tick's label; ticks are 1-2-5 values, so rounding only removes float noise.
fn latency_label(us: f64) -> String {
    if us < 1.0 {
        format!("{}", (us * 1000.0).round() / 1000.0)
    } else {
        format_rate(us)
    }
}

/// Writes `curves` as an SVG line chart to `path`.
pub fn write_latency_chart(
    path: &Path,
    title: &str,
    curves: &[LatencyCurve],
) -> Result<(), String> {
    let all_points = || curves.iter().flat_map(|c| c.points.iter().copied());
    let (Some(min_us), Some(max_us)) = (
        all_points().map(|(_, us)| us).min_by(f64::total_cmp),
        all_points().map(|(_, us)| us).max_by(f64::total_cmp),
    ) else {
        return Err("no latency points to plot: every run failed".into());
    };
    let max_x = all_points().map(|(x, _)| x).fold(0.0, f64::max);
    // 99.999% lands a hair past 5 in floating point; that must not add an empty decade.
    let x_decades = (max_x - 1e-6).ceil().clamp(MIN_X_DECADES, MAX_X_DECADES);
    // Whole decades on y keep the curves off the frame and the ticks round.
    let decade_lo = min_us.log10().floor();
    let decade_hi = max_us.log10().ceil().max(decade_lo + 1.0);
    let y_ticks: Vec<f64> = latency_ticks(10f64.powf(decade_lo), 10f64.powf(decade_hi))
        .into_iter()
        .map(f64::log10)
        .collect();

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    let draw_error = |e: DrawingAreaErrorKind<_>| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        // Room for the last x label, which is centred on the plot's right edge.
        .margin_right(50)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(
            TickedAxis {
                span: 0.0..x_decades,
                ticks: percentile_ticks(x_decades as u32),
            },
            TickedAxis {
                span: decade_lo..decade_hi,
                ticks: y_ticks,
            },
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .x_label_formatter(&|x| percentile_tick_label(*x))
        .y_label_formatter(&|y| latency_label(10f64.powf(*y)))
        .label_style(("sans-serif", 17))
        .axis_desc_style(("sans-serif", 19))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(draw_error)?;
    for (index, curve) in curves.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().map(|&(x, us)| (x, us.log10())),
                colour.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(curve.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
    }
    // The curves rise to the right, so the upper left is where the legend hides nothing.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .label_font(("sans-serif", 17))
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

/// One panel of the matrix chart: a load's title and its lines of (payload bytes, server CPU
/// µs/request), one per server, coloured by the server's index in `servers`.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuPanel {
    pub title: String,
    /// (server, points) with payload ascending.
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

const PANEL_WIDTH: u32 = 620;
const PANEL_HEIGHT: u32 = 560;

/// A payload tick's label: `32 B`, `4 KiB`, `1 MiB`.
fn payload_label(log_bytes: f64) -> String {
    super::matrix::format_bytes(10f64.powf(log_bytes).round() as usize)
}

/// Writes the matrix chart: server CPU µs per request (log y) against payload (log x), one
/// panel per load side by side on a shared y axis, one line per server. `servers` fixes each
/// server's colour across panels.
pub fn write_cpu_chart(
    path: &Path,
    title: &str,
    servers: &[String],
    panels: &[CpuPanel],
) -> Result<(), String> {
    let all_points = || {
        panels.iter().flat_map(|p| {
            p.lines
                .iter()
                .flat_map(|(_, points)| points.iter().copied())
        })
    };
    let (Some(min_us), Some(max_us)) = (
        all_points().map(|(_, us)| us).min_by(f64::total_cmp),
        all_points().map(|(_, us)| us).max_by(f64::total_cmp),
    ) else {
        return Err("no CPU figures to plot: every run failed or none had --server-pid".into());
    };
    let mut payloads: Vec<f64> = all_points().map(|(bytes, _)| bytes).collect();
    payloads.sort_by(f64::total_cmp);
    payloads.dedup();
    let x_lo = payloads[0].log10();
    let x_hi = payloads[payloads.len() - 1].log10();
    // Half a decade either side keeps the end points and their labels off the frame.
    let x_span = (x_lo - 0.5)..(x_hi.max(x_lo + 0.5) + 0.5);
    let decade_lo = min_us.log10().floor();
    let decade_hi = max_us.log10().ceil().max(decade_lo + 1.0);
    let y_ticks: Vec<f64> = latency_ticks(10f64.powf(decade_lo), 10f64.powf(decade_hi))
        .into_iter()
        .map(f64::log10)
        .collect();

    let width = PANEL_WIDTH * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, PANEL_HEIGHT + 50)).into_drawing_area();
    let draw_error = |e: DrawingAreaErrorKind<_>| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(draw_error)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(draw_error)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(&areas) {
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title.as_str(), ("sans-serif", 19))
            .margin(12)
            .margin_right(24)
            .x_label_area_size(50)
            .y_label_area_size(75)
            .build_cartesian_2d(
                TickedAxis {
                    span: x_span.clone(),
                    ticks: payloads.iter().map(|p| p.log10()).collect(),
                },
                TickedAxis {
                    span: decade_lo..decade_hi,
                    ticks: y_ticks.clone(),
                },
            )
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("payload (log scale)")
            .y_desc("server CPU µs per request (log scale)")
            .x_label_formatter(&|x| payload_label(*x))
            .y_label_formatter(&|y| latency_label(10f64.powf(*y)))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .bold_line_style(BLACK.mix(0.12))
            .draw()
            .map_err(draw_error)?;
        for (server, points) in &panel.lines {
            let index = servers.iter().position(|s| s == server).unwrap_or(0);
            let colour = PALETTE[index % PALETTE.len()];
            let xy: Vec<(f64, f64)> = points
                .iter()
                .map(|&(bytes, us)| (bytes.log10(), us.log10()))
                .collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), colour.stroke_width(2)))
                .map_err(draw_error)?
                .label(server.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
                });
            chart
                .draw_series(xy.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                .map_err(draw_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.5))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_name_the_nines() {
        let labels: Vec<String> = percentile_ticks(5)
            .into_iter()
            .map(percentile_tick_label)
            .collect();
        assert_eq!(labels, ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn positions_stretch_the_tail() {
        assert_eq!(percentile_position(0.0), Some(0.0));
        assert!((percentile_position(0.99).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(percentile_position(1.0), None);
    }

    #[test]
    fn latency_ticks_are_one_two_five() {
        assert_eq!(
            latency_ticks(10.0, 1000.0),
            [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        assert_eq!(
            latency_ticks(1.0, 1e6),
            [1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0, 1e6]
        );
    }
}
