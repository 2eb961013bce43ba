//! Opens every volume of the real-data folder through the app's own open paths (gated on `LOGONET_DATA`,
//! e.g. `LOGONET_DATA=/work/shared/data cargo test -p logonet-studio --test data -- --nocapture`).
//!
//! * every NIfTI file opens as an image (File > Open image…) on the grid its header gives;
//! * every label map (a NIfTI whose name looks like labels) opens as the ground truth of an image of the same
//!   folder on the same grid;
//! * every folder holding DICOM files opens as a DICOM folder (File > Open DICOM folder…); when it holds
//!   several series the app asks which one, and the test picks each in turn by clicking its button;
//! * every DICOM file that is a series of its own opens as an image file too.
//!
//! Files the library cannot decode (lossy JPEG needs a codec the pure-Rust stack lacks) must give a readable
//! error in the window, never a crash; the test lists them and fails on any other failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use logonet_studio::actions::{Action, LabelTarget};
use logonet_studio::{StartOptions, StudioApp};

/// Files whose pixel data is known to be undecodable here (JPEG lossy baseline/extended): opening them must
/// fail with a message, not load.
const UNDECODABLE: [&str; 2] = ["JPEG-lossy.dcm", "JPGExtended.dcm"];

/// Known limits of the DICOM reader (`logonet::volume::dicom`), met by the pydicom collection and the JPEG-LS
/// copies of the 12-slice series: no CharLS codec (JPEG-LS), colour images, a multi-frame file without
/// per-frame positions. An error naming one of these is the expected outcome (a readable message in the
/// window), listed by the test; any other error fails it.
const KNOWN_LIMITS: [&str; 5] = [
    "JPEG-LS needs the CharLS codec",
    // A folder holding the same slices several times (pydicom's MR_small in seven transfer syntaxes, the
    // 12-slice series in five): refused with a message, since the copies cannot be told apart as series.
    "slices share a position with another slice",
    "colour images",
    "frame positions are unknown",
    "cannot decode pixel data",
];

fn known_limit(error: &str) -> bool {
    KNOWN_LIMITS.iter().any(|k| error.contains(k))
}

fn data_dir() -> Option<PathBuf> {
    match std::env::var_os("LOGONET_DATA") {
        Some(d) if Path::new(&d).is_dir() => Some(PathBuf::from(d)),
        _ => {
            println!("LOGONET_DATA is not set (or not a folder): skipping the real-data open test");
            None
        }
    }
}

fn harness() -> Harness<'static, StudioApp> {
    let options = StartOptions {
        dialogs: false,
        no_bundled_model: true,
        ..Default::default()
    };
    let mut h = Harness::builder()
        .with_size([1280.0, 800.0])
        .build_eframe(move |cc| StudioApp::new(cc, options));
    wait_idle(&mut h);
    h
}

fn wait_idle(h: &mut Harness<'static, StudioApp>) {
    for _ in 0..20_000 {
        h.step();
        if !h.state().is_busy() && h.state().actions.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!h.state().is_busy(), "background job did not finish");
    h.run_steps(2);
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            dirs.push(p.clone());
            walk(&p, files, dirs);
        } else {
            files.push(p);
        }
    }
}

fn is_nifti(p: &Path) -> bool {
    let n = p.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

/// A DICOM Part 10 file: "DICM" at byte 128.
fn is_dicom(p: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 132];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[128..132] == b"DICM"
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Takes (and clears) the app's messages; returns the error texts.
fn take_errors(h: &mut Harness<'static, StudioApp>) -> Vec<String> {
    std::mem::take(&mut h.state_mut().messages)
        .into_iter()
        .filter(|m| m.is_error)
        .map(|m| m.text)
        .collect()
}

/// Opens `path` as an image through the app; returns the loaded dims or the error shown.
fn open_image(h: &mut Harness<'static, StudioApp>, path: &Path) -> Result<[usize; 3], String> {
    h.state_mut().doc = None;
    let ctx = h.ctx.clone();
    h.state_mut()
        .handle_action(&ctx, Action::OpenImage(path.to_path_buf()));
    wait_idle(h);
    let errors = take_errors(h);
    match (&h.state().doc, errors.first()) {
        (_, Some(e)) => Err(e.clone()),
        (Some(doc), None) => Ok(doc.image.dims),
        (None, None) => Err("nothing loaded and no message".into()),
    }
}

#[test]
fn every_volume_of_the_data_folder_opens() {
    let Some(root) = data_dir() else { return };
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&root, &mut files, &mut dirs);
    let mut h = harness();
    let mut failures = Vec::new();
    let mut expected_failures = Vec::new();
    let mut opened = 0usize;

    // NIfTI images and label maps.
    let niftis: Vec<&PathBuf> = files.iter().filter(|p| is_nifti(p)).collect();
    for p in &niftis {
        let header = match logonet::volume::nifti::read_info(p) {
            Ok(i) => i.dims,
            Err(e) => {
                failures.push(format!("{}: header: {e}", p.display()));
                continue;
            }
        };
        match open_image(&mut h, p) {
            Ok(dims) if dims == header => opened += 1,
            Ok(dims) => failures.push(format!(
                "{}: opened as {dims:?}, header says {header:?}",
                p.display()
            )),
            Err(e) => failures.push(format!("{}: {e}", p.display())),
        }
    }
    // Label maps as ground truth on an image of their folder with the same grid.
    for lab in niftis
        .iter()
        .filter(|p| logonet_studio::looks_like_labels(p))
    {
        let dims = logonet::volume::nifti::read_info(lab).map(|i| i.dims).ok();
        let image = niftis.iter().find(|p| {
            !logonet_studio::looks_like_labels(p)
                && p.parent() == lab.parent()
                && logonet::volume::nifti::read_info(p).map(|i| i.dims).ok() == dims
                && image_stem(p) == image_stem(lab)
        });
        let image = image.or_else(|| {
            niftis.iter().find(|p| {
                !logonet_studio::looks_like_labels(p)
                    && p.parent() == lab.parent()
                    && logonet::volume::nifti::read_info(p).map(|i| i.dims).ok() == dims
            })
        });
        let Some(image) = image else {
            println!("{}: no image on its grid in its folder", lab.display());
            continue;
        };
        if let Err(e) = open_image(&mut h, image) {
            failures.push(format!("{}: {e}", image.display()));
            continue;
        }
        let ctx = h.ctx.clone();
        h.state_mut().handle_action(
            &ctx,
            Action::OpenLabels(lab.to_path_buf(), LabelTarget::GroundTruth),
        );
        wait_idle(&mut h);
        let errors = take_errors(&mut h);
        if let Some(e) = errors.first() {
            failures.push(format!("{} on {}: {e}", lab.display(), name(image)));
        } else if h.state().doc.as_ref().is_some_and(|d| d.gt.is_some()) {
            opened += 1;
        } else {
            failures.push(format!("{}: no ground truth after loading", lab.display()));
        }
    }

    // DICOM folders: each folder with DICOM files, and each parent of such folders (several series).
    let mut dicom_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for d in &dirs {
        let has_dicom = files
            .iter()
            .any(|f| f.parent() == Some(d.as_path()) && is_dicom(f));
        if has_dicom {
            dicom_dirs.insert(d.clone());
            if let Some(parent) = d.parent()
                && parent != root.as_path()
            {
                dicom_dirs.insert(parent.to_path_buf());
            }
        }
    }
    for dir in &dicom_dirs {
        let (ok, expected, bad) = open_dicom_folder(&mut h, dir);
        opened += ok;
        expected_failures.extend(expected);
        failures.extend(bad);
    }

    // Single DICOM files that are a series of their own (the pydicom collection), opened as files.
    for dir in &dicom_dirs {
        let Ok(series) = logonet_studio::backend::scan_series(
            dir,
            &logonet::job::NoProgress,
            &logonet::job::CancelToken::new(),
        ) else {
            continue;
        };
        for s in series.iter().filter(|s| {
            s.info.files.len() == 1
                && s.info.files[0].parent() == Some(dir.as_path())
                && s.info.kind != logonet::volume::dicom::SeriesKind::Segmentation
        }) {
            let p = &s.info.files[0];
            let undecodable = UNDECODABLE.contains(&name(p).as_str());
            match (open_image(&mut h, p), undecodable) {
                (Ok(_), false) => opened += 1,
                (Err(e), u) if (u && !e.is_empty()) || known_limit(&e) => {
                    expected_failures.push(format!("{}: {e}", p.display()))
                }
                (Ok(d), true) => failures.push(format!(
                    "{}: expected a decoding error, loaded {d:?}",
                    p.display()
                )),
                (Err(e), _) => failures.push(format!("{}: {e}", p.display())),
            }
        }
    }

    println!("opened {opened} volumes / label maps");
    for e in &expected_failures {
        println!("expected failure (readable message): {e}");
    }
    assert!(opened > 0, "nothing opened under {}", root.display());
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

/// "patient001_frame01_image" and "patient001_frame01_label" share "patient001_frame01".
fn image_stem(p: &Path) -> String {
    let n = name(p).to_ascii_lowercase();
    let n = n
        .trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .to_string();
    n.split('_')
        .filter(|w| !["image", "label", "labels", "seg", "la", "lgemri", "norm"].contains(w))
        .collect::<Vec<_>>()
        .join("_")
}

/// Opens `dir` as a DICOM folder; when the app offers several series, picks each in turn by clicking its
/// button in the "Choose DICOM series" window. Returns (opened, expected failures, failures).
fn open_dicom_folder(
    h: &mut Harness<'static, StudioApp>,
    dir: &Path,
) -> (usize, Vec<String>, Vec<String>) {
    let (mut ok, mut expected, mut bad) = (0, Vec::new(), Vec::new());
    let series = match logonet_studio::backend::scan_series(
        dir,
        &logonet::job::NoProgress,
        &logonet::job::CancelToken::new(),
    ) {
        Ok(s) => s,
        Err(e) => {
            bad.push(format!("{}: scan: {e}", dir.display()));
            return (ok, expected, bad);
        }
    };
    for (index, s) in series.iter().enumerate() {
        h.state_mut().doc = None;
        let ctx = h.ctx.clone();
        h.state_mut()
            .handle_action(&ctx, Action::OpenDicom(dir.to_path_buf()));
        wait_idle(h);
        if series.len() > 1 {
            let offered = h
                .state()
                .dicom_choice
                .as_ref()
                .map(|(_, s)| s.len())
                .unwrap_or(0);
            if offered != series.len() {
                bad.push(format!(
                    "{}: the app offers {offered} series, the folder has {}",
                    dir.display(),
                    series.len()
                ));
                return (ok, expected, bad);
            }
            h.run_steps(2);
            // Same description twice: click the right occurrence.
            let nth = series[..index]
                .iter()
                .filter(|o| o.description == s.description)
                .count();
            match h.query_all_by_label(&s.description).nth(nth) {
                Some(button) => button.click(),
                None => {
                    bad.push(format!(
                        "{}: no button '{}' in the series chooser",
                        dir.display(),
                        s.description
                    ));
                    continue;
                }
            }
            wait_idle(h);
        }
        let errors = take_errors(h);
        let undecodable = s
            .info
            .files
            .iter()
            .any(|f| UNDECODABLE.contains(&name(f).as_str()));
        let is_seg = s.info.kind == logonet::volume::dicom::SeriesKind::Segmentation;
        let what = format!("{} [{}]", dir.display(), s.description);
        match (h.state().doc.as_ref(), errors.first()) {
            (Some(doc), None) if !undecodable => {
                let d = doc.image.dims;
                if d[0] * d[1] * d[2] == s.info.rows * s.info.cols * s.info.slices.max(1) || is_seg
                {
                    ok += 1;
                } else {
                    bad.push(format!(
                        "{what}: loaded {d:?}, series has {}x{}x{}",
                        s.info.cols, s.info.rows, s.info.slices
                    ));
                }
            }
            (_, Some(e)) if undecodable || is_seg || known_limit(e) => {
                expected.push(format!("{what}: {e}"))
            }
            (_, Some(e)) => bad.push(format!("{what}: {e}")),
            (Some(doc), None) => bad.push(format!(
                "{what}: expected a decoding error, loaded {:?}",
                doc.image.dims
            )),
            (None, None) => bad.push(format!("{what}: nothing loaded and no message")),
        }
    }
    (ok, expected, bad)
}
