//! A PNG of a training run: one panel per series, side by side.

use crate::Error;
use plotters::prelude::*;
use std::path::Path;

/// DejaVu Sans, subset to ASCII (see `fonts/LICENSE`): text without
/// system fonts.
const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-ascii.ttf");

/// One panel's line.
pub struct Series {
    pub title: String,
    pub x_label: String,
    pub points: Vec<(f64, f64)>,
    /// A logarithmic y axis (losses), when every value is positive.
    pub log_y: bool,
}

/// Draw `series` as panels of one PNG at `path` (written whole: to a
/// temporary name, then renamed). Panels without points are left out.
pub fn plot_png(path: &Path, series: &[Series]) -> Result<(), Error> {
    let panels: Vec<&Series> = series
        .iter()
        .filter(|s| s.points.iter().any(|(x, y)| x.is_finite() && y.is_finite()))
        .collect();
    if panels.is_empty() {
        return Err(Error::Plot("no points to plot".into()));
    }
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| Error::Plot("the bundled font does not load".into()))?;
    let partial = path.with_extension("partial.png");
    let (w, h) = (560 * panels.len() as u32, 400);
    {
        let root = BitMapBackend::new(&partial, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot)?;
        let areas = root.split_evenly((1, panels.len()));
        for (area, s) in areas.iter().zip(&panels) {
            panel(area, s)?;
        }
        root.present().map_err(plot)?;
    }
    std::fs::rename(&partial, path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn plot(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &Series,
) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    let points: Vec<(f64, f64)> = s
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (mut x0, mut x1) = bounds(points.iter().map(|p| p.0));
    let (mut y0, mut y1) = bounds(points.iter().map(|p| p.1));
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let log = s.log_y && y0 > 0.0;
    if y1 <= y0 {
        (y0, y1) = if log {
            (y0 / 2.0, y1 * 2.0)
        } else {
            (y0 - 1.0, y1 + 1.0)
        };
    }
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&s.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64);
    let style = RGBColor(31, 119, 180).stroke_width(2);
    if log {
        let mut chart = builder
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(plot)?;
        chart
            .configure_mesh()
            .x_desc(s.x_label.as_str())
            .draw()
            .map_err(plot)?;
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(plot)?;
    } else {
        let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(plot)?;
        chart
            .configure_mesh()
            .x_desc(s.x_label.as_str())
            .draw()
            .map_err(plot)?;
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(plot)?;
    }
    Ok(())
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_plots_as_a_png_and_nothing_to_plot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        let loss = Series {
            title: "loss".into(),
            x_label: "step".into(),
            points: (1..200).map(|s| (s as f64, 2.0 / s as f64)).collect(),
            log_y: true,
        };
        let acc = Series {
            title: "held-out accuracy".into(),
            x_label: "epoch".into(),
            points: vec![(1.0, 0.5), (2.0, 0.8), (3.0, 0.9)],
            log_y: false,
        };
        plot_png(&path, &[loss, acc]).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height.
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((w, h), (1120, 400));
        // The lines are drawn: many pixels of their colour in each half.
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        for half in 0..2 {
            let line = img
                .enumerate_pixels()
                .filter(|(x, _, p)| *x / 560 == half && p.0 == [31, 119, 180])
                .count();
            assert!(line > 200, "panel {half}: {line} line pixels");
        }
        let empty = Series {
            title: "loss".into(),
            x_label: "step".into(),
            points: vec![(1.0, f64::NAN)],
            log_y: true,
        };
        let e = plot_png(&dir.path().join("none.png"), &[empty]).unwrap_err();
        assert_eq!(e.to_string(), "plotting: no points to plot");
    }
}
