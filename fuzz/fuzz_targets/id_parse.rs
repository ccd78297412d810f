//! Id parsing and decoding on arbitrary input: never panics, and whatever is accepted
//! survives a round trip (text for UTF-8 input, postcard for raw bytes).
#![no_main]

use core::fmt::{Debug, Display};
use core::str::FromStr;

use libfuzzer_sys::fuzz_target;
use procwire_core::id::{ActorId, ChannelAddr, ParseError, PortId, ProcId};
use serde::{de::DeserializeOwned, Serialize};

/// If `text` parses as `T`, its display form must parse back to the same value and display
/// identically (the text form is canonical once parsed).
fn text_roundtrip<T>(text: &str)
where
    T: FromStr<Err = ParseError> + Display + Debug + PartialEq,
{
    if let Ok(value) = text.parse::<T>() {
        let shown = value.to_string();
        let again = shown
            .parse::<T>()
            .unwrap_or_else(|e| panic!("{text:?} parsed, but its display {shown:?} did not: {e}"));
        assert_eq!(again, value, "input {text:?}, displayed {shown:?}");
        assert_eq!(again.to_string(), shown);
    }
}

/// If `bytes` decode as `T`, re-encoding and decoding must give the same value.
fn postcard_roundtrip<T>(bytes: &[u8])
where
    T: Serialize + DeserializeOwned + Debug + PartialEq,
{
    if let Ok(value) = postcard::from_bytes::<T>(bytes) {
        let encoded = postcard::to_allocvec(&value).expect("encoding into a Vec cannot fail");
        let again = postcard::from_bytes::<T>(&encoded).expect("re-encoded value must decode");
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = core::str::from_utf8(data) {
        text_roundtrip::<ChannelAddr>(text);
        text_roundtrip::<ProcId>(text);
        text_roundtrip::<ActorId>(text);
        text_roundtrip::<PortId>(text);
    }
    postcard_roundtrip::<PortId>(data);
    postcard_roundtrip::<ActorId>(data);
});
