#[greenrt_macros::test]
fn needs_input(input: &str) {
    assert!(!input.is_empty());
}

fn main() {}
