package instancelock

// Encoding a healthReport in the two formats, without allocating.

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendSpec renders the default format.
func (h *Health) appendSpec(b []byte, rep *healthReport) []byte {
	b = appendJSONString(append(b, `{"status":`...), rep.word)
	if !rep.details {
		return append(b, '}')
	}
	b = h.appendSpecMetrics(b, rep)
	b = appendSpecChecks(b, rep)
	b = append(b, h.fixed...)
	b = appendTimestamp(append(b, `,"timestamp":`...), rep.now)
	b = append(b, h.tail...)
	b = appendSpecDetails(b, rep)
	return append(b, '}')
}

// appendSpecMetrics appends the pid, the uptime, the memory and the
// counters.
func (h *Health) appendSpecMetrics(b []byte, rep *healthReport) []byte {
	mem := rep.mem
	b = strconv.AppendInt(append(b, `,"pid":`...), int64(h.pid), 10)
	b = strconv.AppendInt(append(b, `,"uptime":`...), int64(max(rep.now.Sub(h.startedAt), 0)/time.Second), 10)
	b = strconv.AppendUint(append(b, `,"memoryUsage":{"heapUsed":`...), mem.heapUsed, 10)
	b = strconv.AppendUint(append(b, `,"heapTotal":`...), mem.heapTotal, 10)
	b = strconv.AppendUint(append(b, `,"external":`...), mem.external, 10)
	if mem.hasRSS {
		b = strconv.AppendUint(append(b, `,"rss":`...), mem.rss, 10)
	}
	b = append(b, '}')
	for _, c := range rep.reg.counters {
		b = strconv.AppendInt(append(b, c.key...), int64(c.f()), 10)
	}
	return b
}

// appendSpecChecks appends each check's pass or fail word.
func appendSpecChecks(b []byte, rep *healthReport) []byte {
	if !rep.checks {
		return b
	}
	for i, c := range rep.reg.checks {
		b = append(b, c.key...)
		if rep.results[i].err == nil {
			b = append(b, c.passJSON...)
		} else {
			b = append(b, c.failJSON...)
		}
	}
	return b
}

// appendSpecDetails appends the "details" object naming each failure, if
// anything failed.
func appendSpecDetails(b []byte, rep *healthReport) []byte {
	start := len(b)
	b = append(b, `,"details":{`...)
	n := len(b)
	if rep.checks {
		for i, c := range rep.reg.checks {
			if r := rep.results[i]; r.err != nil {
				b = append(append(b, c.key[1:]...), r.errJSON...)
				b = append(b, ',')
			}
		}
	}
	if rep.lockErr != nil {
		b = appendJSONString(append(b, `"lock":`...), errorText(rep.lockErr))
		b = append(b, ',')
	}
	if rep.liveErr != nil {
		b = appendJSONString(append(b, rep.liveCheck.key[1:]...), errorText(rep.liveErr))
		b = append(b, ',')
	}
	if len(b) == n {
		return b[:start] // nothing failed
	}
	return append(b[:len(b)-1], '}')
}

// appendHealthJSON renders the IETF draft format (application/health+json).
func (h *Health) appendHealthJSON(b []byte, rep *healthReport) []byte {
	status := "pass"
	switch {
	case rep.code >= 500:
		status = "fail"
	case rep.word != "ok":
		status = "warn"
	}
	b = appendJSONString(append(b, `{"status":`...), status)
	if !rep.details {
		return append(b, '}')
	}
	switch {
	case rep.lockErr != nil && rep.word == "error":
		b = appendJSONString(append(b, `,"output":`...), "lock: "+errorText(rep.lockErr))
	case rep.liveErr != nil:
		b = appendJSONString(append(b, `,"output":`...), "critical check "+strconv.Quote(rep.liveCheck.Name)+": "+errorText(rep.liveErr))
	case rep.word != "ok" && rep.word != "error" && rep.word != "degraded":
		b = appendJSONString(append(b, `,"output":`...), rep.word)
	}
	b = append(b, h.hjTail...)
	b = h.appendHealthJSONSystem(append(b, `,"checks":{`...), rep)
	b = appendHealthJSONChecks(b, rep)
	return append(b, "}}"...)
}

// appendHealthJSONSystem appends the uptime, memory and counter entries of
// "checks".
func (h *Health) appendHealthJSONSystem(b []byte, rep *healthReport) []byte {
	mem := rep.mem
	b = appendSeconds(append(b, `"uptime":[{"componentType":"system","observedValue":`...), max(rep.now.Sub(h.startedAt), 0))
	b = appendTimestamp(append(b, `,"observedUnit":"s","status":"pass","time":`...), rep.now)
	b = append(b, "}]"...)
	for _, m := range []struct {
		key string
		v   uint64
		ok  bool
	}{{"heapUsed", mem.heapUsed, true}, {"heapTotal", mem.heapTotal, true}, {"external", mem.external, true}, {"rss", mem.rss, mem.hasRSS}} {
		if !m.ok {
			continue
		}
		b = append(append(append(b, `,"memory:`...), m.key...), `":[{"componentType":"system","observedValue":`...)
		b = strconv.AppendUint(b, m.v, 10)
		b = appendTimestamp(append(b, `,"observedUnit":"bytes","status":"pass","time":`...), mem.at)
		b = append(b, "}]"...)
	}
	for _, c := range rep.reg.counters {
		b = strconv.AppendInt(append(b, c.hjKey...), int64(c.f()), 10)
		b = appendTimestamp(append(b, `,"status":"pass","time":`...), rep.now)
		b = append(b, "}]"...)
	}
	return b
}

// appendHealthJSONChecks appends each check's entry of "checks": its
// response time, status and failure.
func appendHealthJSONChecks(b []byte, rep *healthReport) []byte {
	if !rep.checks {
		return b
	}
	for i, c := range rep.reg.checks {
		r := rep.results[i]
		b = appendSeconds(append(b, c.hjKey...), r.took*1000) // milliseconds
		b = append(b, `,"observedUnit":"ms","status":`...)
		switch {
		case r.err == nil:
			b = append(b, `"pass"`...)
		case c.Optional:
			b = append(b, `"warn"`...)
		default:
			b = append(b, `"fail"`...)
		}
		b = appendTimestamp(append(b, `,"time":`...), r.at)
		if r.err != nil {
			b = append(append(b, `,"output":`...), r.errJSON...)
		}
		b = append(b, "}]"...)
	}
	return b
}

// appendSeconds appends d in seconds with millisecond precision.
func appendSeconds(b []byte, d time.Duration) []byte {
	ms := int64(d / time.Millisecond)
	b = strconv.AppendInt(b, ms/1000, 10)
	frac := ms % 1000
	return append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// appendTimestamp appends t as a quoted UTC time with milliseconds,
// "2025-11-27T21:00:00.000Z", as JavaScript's Date.toISOString writes it.
func appendTimestamp(b []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	hh, mm, ss := t.Clock()
	ms := t.Nanosecond() / int(time.Millisecond)
	if y < 0 || y > 9999 {
		return t.AppendFormat(append(b, '"'), `2006-01-02T15:04:05.000Z"`)
	}
	return append(b, '"',
		byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+int(mo)/10), byte('0'+int(mo)%10), '-', byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+hh/10), byte('0'+hh%10), ':', byte('0'+mm/10), byte('0'+mm%10), ':',
		byte('0'+ss/10), byte('0'+ss%10), '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z', '"')
}

// appendJSONString appends s as a JSON string. Like encoding/json it
// escapes <, > and & (the answer may be shown in a browser), U+2028 and
// U+2029, and replaces invalid UTF-8 with U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(b, s[start:]...), '"')
}
