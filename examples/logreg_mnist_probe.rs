//! Probe: multinomial logistic regression on MNIST (pixels / 255), fit time and accuracy.
use std::io::Read;
fn idx(path: &str, skip: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut d = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut d).unwrap();
    d[skip..].to_vec()
}
fn colmajor(px: &[u8], n: usize) -> Vec<f32> {
    let mut x = vec![0f32; n * 784];
    for i in 0..n {
        for j in 0..784 {
            x[j * n + i] = px[i * 784 + j] as f32 / 255.0;
        }
    }
    x
}
fn main() {
    let tr = idx("data/mnist/train-images-idx3-ubyte.gz", 16);
    let trl: Vec<u32> = idx("data/mnist/train-labels-idx1-ubyte.gz", 8)
        .iter()
        .map(|v| *v as u32)
        .collect();
    let te = idx("data/mnist/t10k-images-idx3-ubyte.gz", 16);
    let tel: Vec<u32> = idx("data/mnist/t10k-labels-idx1-ubyte.gz", 8)
        .iter()
        .map(|v| *v as u32)
        .collect();
    let (xtr, xte) = (colmajor(&tr, 60000), colmajor(&te, 10000));
    let t0 = std::time::Instant::now();
    let m = dagml::ml::glm::fit_logistic(
        &xtr,
        &trl,
        60000,
        10,
        &dagml::ml::glm::LogisticOptions {
            c: 1.0,
            max_iter: 100,
            tol: 1e-4,
            fit_intercept: true,
        },
    )
    .unwrap();
    let fit = t0.elapsed().as_secs_f64();
    let p = m.predict_proba(&xte, 10000).unwrap();
    let acc = (0..10000)
        .filter(|&i| {
            let r = &p[i * 10..i * 10 + 10];
            (0..10).max_by(|a, b| r[*a].total_cmp(&r[*b])).unwrap() as u32 == tel[i]
        })
        .count() as f64
        / 10000.0;
    println!(
        "fit {fit:.2}s iterations {} converged {} test accuracy {acc:.4}",
        m.iterations, m.converged
    );
}
