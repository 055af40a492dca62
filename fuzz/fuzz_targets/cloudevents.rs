//! CloudEvents encoding of any event: binary-mode headers are always valid HTTP headers, and the
//! structured JSON always validates as CloudEvents 1.0.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_sdk::cloudevents::{binary_headers, to_json, validate_json};
use switchyard_sdk::Event;

#[derive(Arbitrary, Debug)]
struct Input {
    id: String,
    source: String,
    ty: String,
    subject: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
    extensions: Vec<(String, String)>,
}

fuzz_target!(|i: Input| {
    if i.id.is_empty() || i.source.is_empty() || i.ty.is_empty() {
        return;
    }
    let mut e = Event::new(i.id, i.source, i.ty).with_data(i.data, i.content_type);
    e.subject = i.subject;
    for (k, v) in &i.extensions {
        e.set_extension(k, v.clone());
    }
    let headers = binary_headers(&e);
    // Every attribute and extension is there: none was left out for an invalid header name.
    let expected = 5 + usize::from(e.subject.is_some()) + e.extensions.len() + 1;
    assert_eq!(headers.len(), expected, "{headers:?} for {e:?}");
    for (name, value) in &headers {
        value
            .to_str()
            .unwrap_or_else(|err| panic!("header {name}: value {value:?}: {err}"));
    }
    let json = to_json(&e);
    let problems = validate_json(&json);
    assert!(problems.is_empty(), "{problems:?} in {json}");
});
