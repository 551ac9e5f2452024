//! The HTML report opens in a real browser (headless Chromium, Debian's `chromium`, which
//! scripts/setup.sh installs) and its plots are visible: the screenshot holds the series colours
//! of the charts, not just text on white. Takes a few seconds.

mod common;

use common::*;
use pgolf_store::files;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Pixels of the screenshot within `tol` of `rgb`.
fn count_colour(pixels: &[[u8; 3]], rgb: [u8; 3], tol: i32) -> usize {
    pixels
        .iter()
        .filter(|p| (0..3).all(|i| (p[i] as i32 - rgb[i] as i32).abs() <= tol))
        .count()
}

#[test]
fn html_report_renders_its_plots_in_headless_chromium() {
    assert!(
        std::path::Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize(&mut store, None);
    let chains: Vec<_> = three_seeds()
        .iter()
        .map(|s| chain(&mut store, &data, s))
        .collect();
    let mut inputs: Vec<(&str, &Made)> = vec![("data", &data)];
    chains.iter().for_each(|c| inputs.extend(c.inputs()));
    let params = json!({"name": "Screenshot fixture", "baseline": {"mean": 1.2500, "std": 0.0005, "n": 3, "unit": "bpb"}});
    let (out, dir) = report(tmp.path(), &inputs, Some(params));
    assert!(out.status.success(), "{}", stderr(&out));

    let png = tmp.path().join("report.png");
    let profile = tmp.path().join("chromium-profile");
    let started = Instant::now();
    let shot = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        // Tall enough to hold the summary, the tables and every figure.
        .arg("--window-size=1280,6000")
        .arg(format!("file://{}", dir.join(files::REPORT_HTML).display()))
        .output()
        .unwrap();
    assert!(
        png.is_file(),
        "no screenshot; chromium said: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the screenshot took {:?}",
        started.elapsed()
    );

    // To look at it: REPORT_SCREENSHOT_DIR=/some/dir cargo test --release -p report --test report_screenshot
    if let Some(keep) = std::env::var_os("REPORT_SCREENSHOT_DIR") {
        let keep = std::path::PathBuf::from(keep);
        std::fs::create_dir_all(keep.join("plots")).unwrap();
        std::fs::copy(&png, keep.join("report.png")).unwrap();
        for f in [
            files::REPORT_HTML,
            files::REPORT_MD,
            files::SUBMISSION,
            "plots/training.svg",
            "plots/bpb_by_stage.svg",
            "plots/artifact_bytes.svg",
        ] {
            std::fs::copy(dir.join(f), keep.join(f)).unwrap();
        }
    }

    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1280, 6000));
    let channels = info.color_type.samples();
    let pixels: Vec<[u8; 3]> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();

    // Not a blank page: mostly white background, but far from a single colour.
    let white = count_colour(&pixels, [255, 255, 255], 0);
    assert!(
        white < pixels.len() * 98 / 100,
        "the page is (almost) blank"
    );
    // The charts drew: the first two series colours (Tableau blue and orange) and the cap line red.
    let blue = count_colour(&pixels, [31, 119, 180], 6);
    let orange = count_colour(&pixels, [255, 127, 14], 6);
    let red = count_colour(&pixels, [200, 0, 0], 10);
    assert!(
        blue > 2000 && orange > 1000 && red > 200,
        "plots not visible: blue {blue}, orange {orange}, red {red} pixels"
    );
}
