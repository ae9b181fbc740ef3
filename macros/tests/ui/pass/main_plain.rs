//! The simplest use: a sync `main` with no return type and no settings but `crate`.

#[path = "../mock_rt.rs"]
mod mock_rt;

#[greenrt_macros::main(crate = "crate::mock_rt")]
fn main() {
    assert_eq!(
        mock_rt::runtime::current(),
        Some(mock_rt::runtime::Config::default())
    );

    // The macro's runtime variable is hygienic: the body's own variable of the same name
    // neither clashes with it nor is replaced by it.
    let __greenrt_rt = "the body's own";
    assert_eq!(__greenrt_rt, "the body's own");
}
