package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"
)

// TestAccessLineMatchesSlog: the hand-rolled access log line is byte for
// byte what slog's JSON handler writes for the same record.
func TestAccessLineMatchesSlog(t *testing.T) {
	strs := []string{"", "plain", `q"uo\\te`, "ctl\x00\x01\x1f\x7f\n\r\t", "<html>&amp;", "ünïcødé ✓",
		"bad\xffutf8\xc3", "sep\u2028\u2029end", "/a%20b/../c?d"}
	durs := []time.Duration{0, time.Microsecond, 1234567 * time.Nanosecond, 3 * time.Second, 90 * time.Minute}
	times := []time.Time{time.Date(2026, 11, 26, 19, 0, 0, 0, time.UTC), time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.Local),
		time.Date(2026, 1, 2, 3, 4, 5, 1000000, time.FixedZone("x", -3600*5-1800))}
	for i, s := range strs {
		e := accessEntry{time: times[i%len(times)], requestID: s, tenant: s, host: s, method: "GET", path: s,
			proto: "HTTP/1.1", status: 200 + i, bytes: int64(i) << 33, duration: durs[i%len(durs)],
			upstream: s, retries: i, peer: s}
		got := appendAccessLine(nil, &e)
		var want bytes.Buffer
		r := slog.NewRecord(e.time, slog.LevelInfo, "request", 0)
		r.AddAttrs(
			slog.String("request_id", e.requestID), slog.String("tenant", e.tenant), slog.String("host", e.host),
			slog.String("method", e.method), slog.String("path", e.path), slog.String("proto", e.proto),
			slog.Int("status", e.status), slog.Int64("bytes", e.bytes),
			slog.Float64("duration_ms", float64(e.duration.Microseconds())/1000),
			slog.String("upstream", e.upstream), slog.Int("retries", e.retries), slog.String("peer", e.peer))
		if err := slog.NewJSONHandler(&want, nil).Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		if string(got) != want.String() {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want.String())
		}
	}
}

func TestNewRequestIDUnique(t *testing.T) {
	a, b := newRequestID(), newRequestID()
	if len(a) != 32 || a == b || a[:16] != b[:16] {
		t.Fatalf("ids %q %q", a, b)
	}
}

func BenchmarkAccessLine(b *testing.B) {
	e := accessEntry{time: time.Now(), requestID: newRequestID(), tenant: "goteborg", host: "goteborg.stagesub.test",
		method: "GET", path: "/some/path", proto: "HTTP/1.1", status: 200, bytes: 1234, duration: 1234 * time.Microsecond,
		upstream: "127.0.0.1:8080", peer: "127.0.0.1"}
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		buf = appendAccessLine(buf[:0], &e)
	}
}

func TestSetCanonicalKeys(t *testing.T) {
	for _, k := range []string{HeaderRequestID, "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"} {
		if c := http.CanonicalHeaderKey(k); c != k {
			t.Errorf("%q is not canonical (%q)", k, c)
		}
	}
}
