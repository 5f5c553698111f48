package proxy_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry"
	"stagesub.dev/router/proxy"
)

func TestAccessLog(t *testing.T) {
	up := echoUpstream(t, "g1")
	f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "g1", up.Listener.Addr().String())
	var buf syncbuf.Buffer
	tr := newRouter(t, f.table(t, nil), func(c *proxy.Config) {
		c.AccessLog = slog.New(slog.NewJSONHandler(&buf, nil))
		c.UnknownLogPerSecond = 5
	})
	resp, _ := tr.do(t, "GET", "goteborg.stagesub.test", "/some/path?secret=1", nil, nil)
	for range 40 {
		tr.do(t, "GET", "scan.example", "/", nil, nil)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"request_id": resp.Header.Get(proxy.HeaderRequestID), "tenant": "goteborg", "host": "goteborg.stagesub.test",
		"method": "GET", "path": "/some/path", "status": 200.0, "upstream": up.Listener.Addr().String(), "retries": 0.0,
	} {
		if got := first[k]; got != want {
			t.Errorf("%s got %v want %v", k, got, want)
		}
	}
	if _, ok := first["duration_ms"]; !ok {
		t.Error("no duration_ms")
	}
	// 40 unknown-host requests within a second or two: at most 2 windows of 5 lines.
	if n := len(lines) - 1; n < 5 || n > 10 {
		t.Errorf("unknown-host lines got %d want 5..10", n)
	}
	if got := testutil.ToFloat64(tr.metrics.LogDropped); got < 30 {
		t.Errorf("dropped got %v want >= 30", got)
	}
}
