//! Templates: any template text parses or is refused; rendered for a path, values from an event
//! never add a path component of their own (no `/`, no `..`).
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_sdk::{Record, Template};

#[derive(Arbitrary, Debug)]
struct Input {
    template: String,
    id: String,
    subject: Option<String>,
    ty: String,
}

fuzz_target!(|i: Input| {
    let Ok(t) = Template::parse(&i.template) else {
        return;
    };
    let mut r = Record::new("p", bytes::Bytes::new());
    r.id = i.id;
    r.subject = i.subject;
    r.ty = i.ty;
    let _ = t.render(&r);
    // With a template of one placeholder, the whole result is one value: one path component.
    for single in ["{id}", "{subject}", "{type}"] {
        let t = Template::parse(single).unwrap();
        let out = t.render_path(&r);
        assert!(!out.contains('/') && !out.contains('\\'), "{out:?}");
        assert!(out != ".." && out != ".", "{out:?}");
    }
});
