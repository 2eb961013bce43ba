//! What the user asked for: panels and menus push [`Action`]s, the app carries them out after drawing.

use std::path::PathBuf;

/// Which label map a loaded file becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelTarget {
    /// The ground truth.
    GroundTruth,
    /// A prediction (e.g. one saved earlier).
    Prediction,
}

/// One user request.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// File dialog, then open an image.
    OpenImageDialog,
    /// Folder dialog, then open a DICOM series.
    OpenDicomDialog,
    /// File dialog, then open a ground truth.
    OpenGroundTruthDialog,
    /// File dialog, then open a prediction.
    OpenPredictionDialog,
    /// File dialog, then load a model bundle.
    OpenModelDialog,
    /// File dialog, then save the prediction.
    SaveSegmentationDialog,
    /// Open a path whose kind is guessed (drag and drop, recent files): folder = DICOM, else image or labels.
    OpenPath(PathBuf),
    /// Open an image file.
    OpenImage(PathBuf),
    /// Open a label map.
    OpenLabels(PathBuf, LabelTarget),
    /// Scan a DICOM folder.
    OpenDicom(PathBuf),
    /// Load one series of a scanned DICOM folder.
    LoadDicomSeries(PathBuf, String),
    /// Load a model bundle.
    OpenModel(PathBuf),
    /// Load the embedded sample.
    LoadDefault,
    /// Segment the image with the loaded model.
    RunSegmentation,
    /// Cancel the running segmentation.
    CancelSegmentation,
    /// Cancel the running load.
    CancelLoad,
    /// Save the prediction to a path.
    SaveSegmentation(PathBuf),
    /// The difference-map label changed: recompute.
    DiffLabelChanged,
    /// Forget the recent files.
    ClearRecent,
    /// Close the program.
    Quit,
}
