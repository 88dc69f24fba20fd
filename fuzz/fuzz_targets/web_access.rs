#![no_main]

use libfuzzer_sys::fuzz_target;
use yagura_agent::parse::ParserKind;

fuzz_target!(|data: &[u8]| yagura_fuzz::check_parser(ParserKind::WebAccess, data));
