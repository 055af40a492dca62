//! Decoding a function's answer (CloudEvents binary, structured, batch; the azure-functions
//! reply): any bytes, any content type, never a panic.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    azure: bool,
    content_type: Option<String>,
    body: Vec<u8>,
}

fuzz_target!(|i: Input| {
    let _ = switchyard::invoker::decode_answer_for_fuzzing(
        i.azure,
        i.content_type.as_deref(),
        &i.body,
    );
    // The usual content types, with the body as the fuzzer made it.
    for ct in [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json",
    ] {
        let _ = switchyard::invoker::decode_answer_for_fuzzing(false, Some(ct), &i.body);
    }
});
