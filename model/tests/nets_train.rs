//! Train mode: the tiny LoGoNet training-step fixture (`tests/fixtures/pipeline/train_step_logonet_tiny`,
//! README §1): train-mode logits, BatchNorm running statistics after the forward, the DiceCE loss and every
//! parameter gradient; plus gradients checked against finite differences in f64.

mod nets_support;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use logonet::nets::checkpoint::{load_into_varmap, new_net};
use logonet::nets::van3d::Block3D;
use logonet::nets::{NetConfig, SegmentationNet as _, is_trainable};
use nets_support::{assert_close, load, max_abs_diff};

/// MONAI `DiceCELoss(to_onehot_y=True, softmax=True)` with default arguments (pipeline README §2).
fn dice_ce(logits: &Tensor, label: &Tensor) -> Tensor {
    let c = logits.dims()[1];
    let classes = Tensor::arange(0u32, c as u32, logits.device())
        .unwrap()
        .reshape((1, c, 1, 1, 1))
        .unwrap();
    let g = label
        .to_dtype(DType::U32)
        .unwrap()
        .broadcast_eq(&classes)
        .unwrap()
        .to_dtype(logits.dtype())
        .unwrap();
    let p = candle_nn::ops::softmax(logits, 1).unwrap();
    let sum_sp = |t: &Tensor| t.flatten_from(2).unwrap().sum(D::Minus1).unwrap(); // [B, C]
    let tp = sum_sp(&(&p * &g).unwrap());
    let fp = (sum_sp(&p) - &tp).unwrap();
    let fne = (sum_sp(&g) - &tp).unwrap();
    let num = ((&tp * 2.0).unwrap() + 1e-5).unwrap();
    let den =
        (((&tp + (fp * 0.5).unwrap()).unwrap() + (fne * 0.5).unwrap()).unwrap() * 2.0).unwrap();
    let den = (den + 1e-5).unwrap();
    let dice = (1.0 - (num / den).unwrap()).unwrap().mean_all().unwrap();
    let logp = candle_nn::ops::log_softmax(logits, 1).unwrap();
    let ce = (&g * &logp)
        .unwrap()
        .sum(1)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap();
    (dice + ce).unwrap()
}

#[test]
fn train_step_fixture_logits_running_stats_loss_and_grads() {
    let weights = load("reference", "logonet_tiny.weights.safetensors");
    let io = load("pipeline", "train_step_logonet_tiny.io.safetensors");
    let cfg = NetConfig::from_name("logonet-tiny").unwrap();
    let loaded = new_net(&cfg, &Device::Cpu).unwrap();
    let report = load_into_varmap(&loaded.varmap, &weights, true).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());

    let x = &io["input.x"]; // [2, 1, 32, 32, 32]
    let logits = loaded.net.forward_t(x, true).unwrap(); // [2, 14, 32, 32, 32]
    assert_close(
        "train-mode logits item 0",
        &logits.narrow(0, 0, 1).unwrap(),
        &io["output.logits_item0"],
        5e-5,
    );

    // Running statistics after the forward.
    let vars = loaded.varmap.data().lock().unwrap().clone();
    let mut n_stats = 0;
    for (key, expected) in io
        .iter()
        .filter(|(k, _)| k.starts_with("bn_after_forward."))
    {
        let name = key.trim_start_matches("bn_after_forward.");
        let ours = vars
            .get(name)
            .unwrap_or_else(|| panic!("no variable {name}"));
        if name.ends_with("num_batches_tracked") {
            assert_eq!(
                ours.as_tensor().to_scalar::<i64>().unwrap(),
                expected.to_scalar::<i64>().unwrap(),
                "{name}"
            );
        } else {
            let d = max_abs_diff(ours.as_tensor(), expected);
            // The project's f32 parity bound (see train_step.rs: the deepest running variances come from
            // 1³ maps and carry the conv kernels' rounding, 2.4e-5 at worst).
            assert!(d <= 1e-4, "{name}: {d:e}");
        }
        n_stats += 1;
    }
    assert_eq!(n_stats, 237 * 3);

    // DiceCE loss and all 1,230 parameter gradients.
    let loss = dice_ce(&logits, &io["input.label"]);
    let loss_v = loss.to_scalar::<f32>().unwrap() as f64;
    let loss_ref = io["output.loss"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0] as f64;
    println!("loss {loss_v} (reference {loss_ref})");
    assert!((loss_v - loss_ref).abs() <= 1e-5);
    let grads = loss.backward().unwrap();
    let mut worst = (0.0f64, String::new());
    let mut n_grads = 0;
    for (name, var) in vars.iter().filter(|(n, _)| is_trainable(n)) {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let d = max_abs_diff(g, &io[&format!("grad.{name}")]);
        if d > worst.0 {
            worst = (d, name.clone());
        }
        n_grads += 1;
    }
    println!("worst gradient diff {:.3e} at {}", worst.0, worst.1);
    assert_eq!(n_grads, 1230);
    // The project's parity standard (and issue 7) is 1e-4. The fixture README suggests 2e-5 (fp32-vs-fp64 noise
    // 9.2e-6); since the session-2 kernels (vectorised GELU/erf, fused norm backward, new conv kernels) the worst
    // tensor is van.final_conv1.0.weight at 4.4e-5, which is why this is 1e-4 and not 2e-5 (to be tightened).
    assert!(
        worst.0 <= 1e-4,
        "gradient of {} differs by {:e}",
        worst.1,
        worst.0
    );
}

/// Central finite differences in f64 on an encoder block in train mode (batch statistics are part of the
/// function). Whole networks are not checked this way: their LeakyReLU kinks make finite differences
/// unreliable at 1e-5; the fixture test above checks all 1,230 gradients of tiny LoGoNet instead.
#[test]
fn gradients_match_finite_differences_f64() {
    let dev = Device::Cpu;
    // --- Block3D, train mode.
    let varmap = VarMap::new();
    let block = Block3D::new(VarBuilder::from_varmap(&varmap, DType::F64, &dev), 4, 2).unwrap();
    // Layer scales of 0.01 would hide the branches: use O(1) values.
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if name.starts_with("layer_scale") {
            var.set(&Tensor::new(&[0.9f64, -0.6, 0.7, 1.1], &dev).unwrap())
                .unwrap();
        }
    }
    let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 4, 3, 4, 5), &dev).unwrap()).unwrap();
    let r = Tensor::randn(0f64, 1.0, (2, 4, 3, 4, 5), &dev).unwrap();
    let f = |x: &Tensor| -> Tensor {
        (block.forward_t(x, true).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    check_fd("block3d", &varmap, &x, &f);
}

fn check_fd(what: &str, varmap: &VarMap, x: &Var, f: &dyn Fn(&Tensor) -> Tensor) {
    let loss = f(x.as_tensor());
    let grads = loss.backward().unwrap();
    let mut targets: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| is_trainable(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    // Every 5th parameter tensor plus the input; two elements of each.
    let mut picked: Vec<(String, Var)> = targets.into_iter().step_by(5).collect();
    picked.push(("input".to_string(), x.clone()));
    let eps = 1e-6;
    let mut worst = 0f64;
    for (name, var) in &picked {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
        let n = var.elem_count();
        for idx in [0, (n / 2 + n / 3) % n] {
            let orig = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let eval = |delta: f64| -> f64 {
                let mut v = orig.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                    .unwrap();
                f(x.as_tensor()).to_scalar::<f64>().unwrap()
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(orig.clone(), var.dims(), &Device::Cpu).unwrap())
                .unwrap();
            let an = g.flatten_all().unwrap().to_vec1::<f64>().unwrap()[idx];
            let err = (fd - an).abs() / (1.0 + an.abs());
            worst = worst.max(err);
            assert!(
                err < 1e-5,
                "{what} {name}[{idx}]: finite difference {fd} vs autograd {an}"
            );
        }
    }
    println!(
        "{what}: {} tensors checked, worst relative error {worst:.2e}",
        picked.len()
    );
}
