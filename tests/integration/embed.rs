//! The tiny BERT generator is shared with these tests through `#[path]`, so it must compile
//! outside the crate; what it writes must load through the library's public API.

#[path = "../../src/embed/tiny.rs"]
pub mod tiny;

use brain::embed::Embedder;

#[test]
fn the_shared_tiny_model_loads_and_embeds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-bert");
    tiny::write_tiny_bert(&dir, 1).unwrap();
    let e = Embedder::load(&dir).unwrap();
    assert_eq!(e.dim(), tiny::HIDDEN);
    assert!(e.model_id().starts_with("tiny-bert@"));
    let v = e.embed(&["hello world", ""]).unwrap();
    assert_eq!(v.len(), 2);
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}
