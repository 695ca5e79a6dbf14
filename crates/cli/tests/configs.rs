//! `configs/demo.toml` is the demo's MoE run, key for key.

use std::path::Path;

use switchyard_cli::demo::demo_config;
use switchyard_train::TrainConfig;

#[test]
fn configs_demo_toml_is_the_demo_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo.toml");
    let mut file = TrainConfig::from_toml_file(&path, &[]).unwrap();
    let demo = demo_config(false);
    file.run_dir = demo.run_dir.clone();
    assert!(
        file == demo,
        "configs/demo.toml differs from demo_config(false); regenerate it from:\n{}",
        demo.to_toml_string()
    );
}
