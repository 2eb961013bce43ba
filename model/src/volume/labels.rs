//! Label tables: the name and colour of each label value.

use serde::{Deserialize, Serialize};

/// One label: its value in the label map, a name and a display colour (sRGB).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelInfo {
    /// The voxel value.
    pub value: u16,
    /// Human-readable name ("liver").
    pub name: String,
    /// Display colour, sRGB.
    pub color: [u8; 3],
}

/// The labels of a segmentation task (background, value 0, is not listed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelTable {
    /// Labels in ascending value order.
    pub labels: Vec<LabelInfo>,
}

/// The 13 BTCV organs in BTCV order (values 1..=13) with ITK-SNAP-like colours.
const BTCV: [(&str, [u8; 3]); 13] = [
    ("spleen", [157, 108, 162]),
    ("right kidney", [185, 102, 83]),
    ("left kidney", [185, 102, 83]),
    ("gallbladder", [139, 150, 98]),
    ("esophagus", [211, 171, 143]),
    ("liver", [221, 130, 101]),
    ("stomach", [216, 132, 105]),
    ("aorta", [224, 97, 76]),
    ("inferior vena cava", [0, 151, 206]),
    ("portal and splenic veins", [0, 112, 165]),
    ("pancreas", [249, 180, 111]),
    ("right adrenal gland", [244, 214, 49]),
    ("left adrenal gland", [240, 200, 40]),
];

/// A distinct colour for label `value` when a table gives none (golden-angle hue walk).
pub fn default_color(value: u16) -> [u8; 3] {
    let h = (value as f64 * 137.507_764) % 360.0;
    let (s, v) = (0.65, 0.95);
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [
        ((r + m) * 255.0) as u8,
        ((g + m) * 255.0) as u8,
        ((b + m) * 255.0) as u8,
    ]
}

impl LabelTable {
    /// The 13 BTCV abdominal organs (values 1..=13), the default for CT.
    pub fn btcv() -> Self {
        let mut labels: Vec<LabelInfo> = BTCV
            .iter()
            .enumerate()
            .map(|(i, (name, color))| LabelInfo {
                value: i as u16 + 1,
                name: (*name).to_string(),
                color: *color,
            })
            .collect();
        // Left and right kidney get distinguishable shades.
        labels[2].color = [212, 126, 101];
        Self { labels }
    }

    /// Generic names ("label 1", ...) for values `1..=n`.
    pub fn numbered(n: u16) -> Self {
        Self {
            labels: (1..=n)
                .map(|v| LabelInfo {
                    value: v,
                    name: format!("label {v}"),
                    color: default_color(v),
                })
                .collect(),
        }
    }

    /// The entry for `value`, if any.
    pub fn get(&self, value: u16) -> Option<&LabelInfo> {
        self.labels.iter().find(|l| l.value == value)
    }

    /// The name of `value` ("background" for 0, "label N" when unknown).
    pub fn name(&self, value: u16) -> String {
        match (value, self.get(value)) {
            (0, _) => "background".to_string(),
            (_, Some(l)) => l.name.clone(),
            (v, None) => format!("label {v}"),
        }
    }

    /// The colour of `value` (a generated one when unknown).
    pub fn color(&self, value: u16) -> [u8; 3] {
        self.get(value)
            .map(|l| l.color)
            .unwrap_or_else(|| default_color(value))
    }
}
