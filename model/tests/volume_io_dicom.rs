//! `volume::io::load_image` on a DICOM folder (gated on `LOGONET_DATA`): the series loads through
//! `volume::dicom`, has the same grid as the reference NIfTI conversion, and converts to NIfTI and back.

use logonet::volume::io::{load_image, save_image};
use std::path::PathBuf;

fn data_dir() -> Option<PathBuf> {
    match std::env::var_os("LOGONET_DATA") {
        Some(d) => Some(PathBuf::from(d).join("ct_dicom_series_totalseg")),
        None => {
            eprintln!("LOGONET_DATA is not set: skipping the DICOM folder test");
            None
        }
    }
}

#[test]
fn dicom_folder_loads_and_converts() {
    let Some(dir) = data_dir() else { return };
    let series = logonet::volume::dicom::scan_series(&dir.join("dicom_j2k_lossless")).unwrap();
    assert!(!series.is_empty());
    let vol = load_image(&dir.join("dicom_j2k_lossless")).unwrap();
    let reference = load_image(&dir.join("ct_from_dicom.nii.gz")).unwrap();
    assert_eq!(vol.dims, reference.dims);
    assert!(vol.ras_from_ijk.max_abs_diff(&reference.ras_from_ijk) < 1e-3);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ct.nii.gz");
    save_image(&out, &vol).unwrap();
    let back = load_image(&out).unwrap();
    assert_eq!(back.dims, vol.dims);
    assert_eq!(back.data, vol.data);
    // A folder that is not DICOM is an error, not a panic.
    assert!(load_image(tmp.path()).is_err());
}
