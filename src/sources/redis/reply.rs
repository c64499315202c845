//! Reading `redis::Value` replies into the shapes we use, for RESP2 and RESP3 alike.
//! Every function names what it expected, so a strange reply becomes a clear series error.

use redis::Value;

/// A reply as an integer (`LLEN`, `XLEN`, `ZCARD`, `ZCOUNT`).
pub fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("expected an integer, got {:?}", String::from_utf8_lossy(b))),
        Value::SimpleString(s) => s
            .parse()
            .map_err(|_| format!("expected an integer, got {s:?}")),
        other => Err(format!("expected an integer, got {}", describe(other))),
    }
}

/// A reply as text, or `None` for nil.
pub fn text(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
        Value::SimpleString(s) => Ok(Some(s.clone())),
        Value::VerbatimString { text, .. } => Ok(Some(text.clone())),
        Value::Okay => Ok(Some("OK".into())),
        Value::Int(n) => Ok(Some(n.to_string())),
        Value::Double(d) => Ok(Some(d.to_string())),
        other => Err(format!("expected a string, got {}", describe(other))),
    }
}

/// Element `i` of an array reply as text; `None` when it is missing or nil.
pub fn text_at(items: &[Value], i: usize) -> Result<Option<String>, String> {
    Ok(items.get(i).map(text).transpose()?.flatten())
}

/// Element `i` of an array reply as an integer; `None` when it is missing.
pub fn int_at(items: &[Value], i: usize) -> Result<Option<i64>, String> {
    items.get(i).map(int).transpose()
}

/// A reply as raw bytes, or `None` for nil (`LINDEX`).
pub fn bytes(v: &Value) -> Result<Option<&[u8]>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => Ok(Some(b)),
        Value::SimpleString(s) => Ok(Some(s.as_bytes())),
        other => Err(format!("expected a string, got {}", describe(other))),
    }
}

/// A reply as an array.
pub fn array(v: &Value) -> Result<&[Value], String> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(format!("expected an array, got {}", describe(other))),
    }
}

/// A field/value reply: a RESP3 map, or a RESP2 flat array of alternating names and values.
pub fn pairs(v: &Value) -> Result<Vec<(String, &Value)>, String> {
    match v {
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| Ok((text(k)?.unwrap_or_default(), v)))
            .collect(),
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|kv| Ok((text(&kv[0])?.unwrap_or_default(), &kv[1])))
            .collect(),
        other => Err(format!(
            "expected field/value pairs, got {}",
            describe(other)
        )),
    }
}

/// The score of the first entry of a `ZRANGE ... WITHSCORES` reply, or `None` when it is empty.
/// RESP2 answers a flat `[member, score, ...]` with the score as text; RESP3 answers
/// `[[member, score], ...]` with the score a double.
pub fn first_score(v: &Value) -> Result<Option<String>, String> {
    let items = array(v)?;
    let score = match items.first() {
        None => return Ok(None),
        Some(Value::Array(pair)) => pair.get(1),
        Some(_) => items.get(1),
    };
    match score {
        Some(score) => text(score),
        None => Err(format!(
            "ZRANGE WITHSCORES: expected a member and its score, got {}",
            describe(v)
        )),
    }
}

/// The members and scores of a `ZRANGE ... WITHSCORES` reply, flat (RESP2) or in pairs (RESP3).
pub fn member_scores(v: &Value) -> Result<Vec<(Vec<u8>, String)>, String> {
    let items = array(v)?;
    let bad = || {
        format!(
            "ZRANGE WITHSCORES: expected members and scores, got {}",
            describe(v)
        )
    };
    let mut out = Vec::with_capacity(items.len() / 2 + 1);
    let mut push = |member: &Value, score: &Value| -> Result<(), String> {
        let member = bytes(member)?.ok_or_else(bad)?.to_vec();
        let score = text(score)?.ok_or_else(bad)?;
        out.push((member, score));
        Ok(())
    };
    if items.iter().all(|i| matches!(i, Value::Array(_))) {
        for pair in items {
            let pair = array(pair)?;
            match pair {
                [member, score] => push(member, score)?,
                _ => return Err(bad()),
            }
        }
    } else {
        if items.len() % 2 != 0 {
            return Err(bad());
        }
        for pair in items.chunks(2) {
            push(&pair[0], &pair[1])?;
        }
    }
    Ok(out)
}

/// The server's clock from a `TIME` reply, in epoch milliseconds.
pub fn time_ms(v: &Value) -> Result<f64, String> {
    let parts = array(v)?;
    let [secs, micros] = parts else {
        return Err(format!("TIME: expected two elements, got {}", parts.len()));
    };
    Ok(int(secs)? as f64 * 1000.0 + int(micros)? as f64 / 1000.0)
}

/// The millisecond part of a stream entry ID (`1795311009997-0`), which is the time Redis
/// assigned when the entry was added with `XADD *`.
pub fn stream_id_ms(id: &str) -> Result<f64, String> {
    let ms = id.split('-').next().unwrap_or("");
    ms.parse::<u64>()
        .map(|ms| ms as f64)
        .map_err(|_| format!("{id:?} is not a stream entry ID"))
}

/// A server error reply, if that is what `v` is.
pub fn server_error(v: &Value) -> Option<String> {
    match v {
        Value::ServerError(e) => Some(
            format!("{} {}", e.code(), e.details().unwrap_or(""))
                .trim()
                .to_string(),
        ),
        _ => None,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::ServerError(_) => format!("the error {:?}", server_error(v).unwrap_or_default()),
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::Map(items) => format!("a map of {}", items.len()),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_reads_resp2_and_resp3_field_lists() {
        let resp2 = Value::Array(vec![
            Value::BulkString(b"name".to_vec()),
            Value::BulkString(b"workers".to_vec()),
            Value::BulkString(b"lag".to_vec()),
            Value::Nil,
        ]);
        let resp3 = Value::Map(vec![
            (
                Value::BulkString(b"name".to_vec()),
                Value::BulkString(b"workers".to_vec()),
            ),
            (Value::BulkString(b"lag".to_vec()), Value::Nil),
        ]);
        for v in [resp2, resp3] {
            let p = pairs(&v).expect("pairs");
            assert_eq!(p[0].0, "name");
            assert_eq!(p[1], ("lag".to_string(), &Value::Nil));
        }
    }

    #[test]
    fn first_score_reads_resp2_flat_and_resp3_nested_replies() {
        let resp2 = Value::Array(vec![
            Value::BulkString(b"job-1".to_vec()),
            Value::BulkString(b"1795310979.5".to_vec()),
        ]);
        let resp3 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"job-1".to_vec()),
            Value::Double(1_795_310_979.5),
        ])]);
        for v in [resp2, resp3] {
            assert_eq!(
                first_score(&v),
                Ok(Some("1795310979.5".to_string())),
                "{v:?}"
            );
        }
        assert_eq!(first_score(&Value::Array(vec![])), Ok(None));
        let lone = Value::Array(vec![Value::BulkString(b"job-1".to_vec())]);
        assert!(first_score(&lone).is_err(), "a member without a score");
        // BullMQ scores (ms × 4096) stay exact in a double and print without an exponent.
        let bull = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"j".to_vec()),
            Value::Double(7_353_592_772_067_335.0),
        ])]);
        assert_eq!(first_score(&bull), Ok(Some("7353592772067335".to_string())));
    }

    #[test]
    fn stream_ids_and_time_replies_are_read_as_milliseconds() {
        assert_eq!(stream_id_ms("1795311009997-0"), Ok(1_795_311_009_997.0));
        assert!(stream_id_ms("abc").is_err());
        let t = Value::Array(vec![
            Value::BulkString(b"1795311069".to_vec()),
            Value::BulkString(b"997000".to_vec()),
        ]);
        assert_eq!(time_ms(&t), Ok(1_795_311_069_997.0));
    }
}
