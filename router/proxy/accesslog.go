package proxy

import (
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessLogger writes access log lines straight to an io.Writer (the
// router's logbuf.Writer). A line is byte for byte what
// slog.NewJSONHandler(w, nil) writes for the same record (time as
// RFC 3339 with nanoseconds, level INFO, msg "request", then the
// fields in order), built without slog's per-attribute dispatch: slog's
// encoding was the largest cost of the handler itself in CPU profiles.
type accessLogger struct {
	w    io.Writer
	pool sync.Pool // *[]byte line buffers
}

// accessEntry holds the fields of one access log line.
type accessEntry struct {
	time      time.Time
	requestID string
	tenant    string
	host      string
	method    string
	path      string
	proto     string
	status    int
	bytes     int64
	duration  time.Duration
	upstream  string
	retries   int
	peer      string
}

// log writes e as one line with a single Write.
func (l *accessLogger) log(e *accessEntry) {
	bp, _ := l.pool.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, 512)
		bp = &b
	}
	b := appendAccessLine((*bp)[:0], e)
	_, _ = l.w.Write(b)
	if cap(b) <= 4<<10 { // do not keep buffers grown by a huge path
		*bp = b
		l.pool.Put(bp)
	}
}

// appendAccessLine appends e as slog's JSONHandler would encode it.
func appendAccessLine(b []byte, e *accessEntry) []byte {
	b = append(b, `{"time":"`...)
	b = e.time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"request","request_id":`...)
	b = appendJSONString(b, e.requestID)
	b = append(b, `,"tenant":`...)
	b = appendJSONString(b, e.tenant)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, e.host)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.path)
	b = append(b, `,"proto":`...)
	b = appendJSONString(b, e.proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, `,"duration_ms":`...)
	// encoding/json (which slog uses for floats) formats with 'f' for
	// 1e-6 <= |f| < 1e21 and 0: always the case for a millisecond count
	// with microsecond resolution.
	b = strconv.AppendFloat(b, float64(e.duration.Microseconds())/1000, 'f', -1, 64)
	b = append(b, `,"upstream":`...)
	b = appendJSONString(b, e.upstream)
	b = append(b, `,"retries":`...)
	b = strconv.AppendInt(b, int64(e.retries), 10)
	b = append(b, `,"peer":`...)
	b = appendJSONString(b, e.peer)
	return append(b, "}\n"...)
}

// appendJSONString appends s quoted and escaped exactly like log/slog's
// JSON handler: '"', '\\' and control characters escaped, invalid UTF-8 as
// \ufffd, U+2028 and U+2029 escaped; '<', '>' and '&' kept.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
