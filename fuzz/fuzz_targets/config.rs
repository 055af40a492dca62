//! Config loading (YAML, `${VAR}` interpolation, tagged connector enums, checks) on any text:
//! never a panic; an error always names the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::config::Source;

struct Fake;
impl Source for Fake {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b'c: {d}\n- e".into()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }
    fn file(&self, path: &str) -> Result<String, String> {
        Err(format!("no file {path} in the fuzzer"))
    }
}

fuzz_target!(|text: &str| {
    if let Err(e) = switchyard::config::load_str(text, "fuzz.yaml", &Fake) {
        assert!(e.to_string().contains("fuzz.yaml"), "{e}");
    }
    let _ = switchyard::config::expand(text, &Fake);
});
