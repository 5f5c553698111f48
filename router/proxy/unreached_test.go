package proxy_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"stagesub.dev/registry"
	"stagesub.dev/router/proxy"
	"stagesub.dev/router/route"
)

// backendByID returns the backend id of host's route in the current table.
func backendByID(t *testing.T, tr *testRouter, host, id string) *route.Backend {
	t.Helper()
	for _, b := range tr.tables.Load().Lookup(host).Backends {
		if b.ID == id {
			return b
		}
	}
	t.Fatalf("no backend %s for %s", id, host)
	return nil
}

// TestUnreached covers requests whose attempts fail before reaching an
// upstream (the registry still lists a dead instance as passing): with no
// other instance they get the 503 no-instance page, never 502; with a live
// instance they are retried there. The dead instance is ejected either way.
func TestUnreached(t *testing.T) {
	const host = "goteborg.stagesub.test"
	for _, tt := range []struct {
		name     string
		live     bool // a second, working instance
		method   string
		body     string
		streamed bool // send the body chunked (never buffered)

		wantStatus     int
		wantRetryAfter string
		wantBody       string // substring
		wantNoInstance float64
		wantRetries    float64
	}{
		{name: "OnlyInstanceGET", method: "GET", wantStatus: 503, wantRetryAfter: "5", wantBody: "restarting", wantNoInstance: 1},
		{name: "OnlyInstancePOST", method: "POST", body: "hello", wantStatus: 503, wantRetryAfter: "5", wantBody: "restarting", wantNoInstance: 1},
		{name: "OnlyInstanceStreamedPOST", method: "POST", body: "hello", streamed: true, wantStatus: 503, wantRetryAfter: "5", wantBody: "restarting", wantNoInstance: 1},
		{name: "SecondInstanceGET", live: true, method: "GET", wantStatus: 200, wantBody: "live:GET:/:", wantRetries: 1},
		{name: "SecondInstancePOST", live: true, method: "POST", body: "hello", wantStatus: 200, wantBody: "live:POST:/:hello", wantRetries: 1},
		{name: "SecondInstanceStreamedPOST", live: true, method: "POST", body: "hello", streamed: true, wantStatus: 200, wantBody: "live:POST:/:hello", wantRetries: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "dead", deadAddr(t))
			if tt.live {
				f.instance("goteborg", "live", echoUpstream(t, "live").Listener.Addr().String())
			}
			tr := newRouter(t, f.table(t, nil), nil)
			ejections := tr.metrics.Ejections.WithLabelValues("goteborg")
			// With two instances the picker chooses at random: send requests
			// until one was tried on the dead instance (then ejected). Each
			// must get the wanted answer.
			for i := 0; i < 50 && testutil.ToFloat64(ejections) == 0; i++ {
				var body io.Reader
				if tt.body != "" {
					body = strings.NewReader(tt.body)
				}
				if tt.streamed {
					pr, pw := io.Pipe()
					go func() { _, _ = io.WriteString(pw, tt.body); pw.Close() }()
					body = pr
				}
				resp, got := tr.do(t, tt.method, host, "/", body, nil)
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("request %d: status got %d want %d; body %q", i, resp.StatusCode, tt.wantStatus, got)
				}
				if g := resp.Header.Get("Retry-After"); g != tt.wantRetryAfter {
					t.Errorf("request %d: Retry-After got %q want %q", i, g, tt.wantRetryAfter)
				}
				if !strings.Contains(got, tt.wantBody) {
					t.Errorf("request %d: body %q does not contain %q", i, got, tt.wantBody)
				}
			}
			if got, want := testutil.ToFloat64(ejections), 1.0; got != want {
				t.Errorf("ejections got %v want %v", got, want)
			}
			if !backendByID(t, tr, host, "dead").Ejected(time.Now().UnixNano()) {
				t.Error("dead instance not ejected")
			}
			for _, c := range []struct {
				reason string
				want   float64
			}{{"refused", 1}, {"no_instance", tt.wantNoInstance}, {"reset", 0}, {"other", 0}} {
				if got := testutil.ToFloat64(tr.metrics.UpstreamErrors.WithLabelValues("goteborg", c.reason)); got != c.want {
					t.Errorf("upstream errors %s got %v want %v", c.reason, got, c.want)
				}
			}
			if got := testutil.ToFloat64(tr.metrics.Retries.WithLabelValues("goteborg")); got != tt.wantRetries {
				t.Errorf("retries got %v want %v", got, tt.wantRetries)
			}
		})
	}
}

// TestUnreached_Wait: after every instance failed before the request reached
// it, the request waits up to NoInstanceWait for an instance it has not
// tried, of the same tenant, then is retried there or gets the 503 page.
func TestUnreached_Wait(t *testing.T) {
	const wait = 300 * time.Millisecond
	for _, tt := range []struct {
		name string
		// next returns the table published once the dead instance was
		// tried, or nil for none.
		next       func(t *testing.T, dead string) *fleet
		host       string
		wantStatus int
		wantBody   string
		minTook    time.Duration
	}{
		{
			name: "InstanceAppears", host: "goteborg.stagesub.test",
			next: func(t *testing.T, dead string) *fleet {
				return newFleet().tenant("goteborg", registry.StatusActive, "vikarier.gso.se").
					instance("goteborg", "dead", dead). // still listed as passing
					instance("goteborg", "new", echoUpstream(t, "new").Listener.Addr().String())
			},
			wantStatus: 200, wantBody: "new:POST:/:hello",
		},
		{
			name: "NothingAppears", host: "goteborg.stagesub.test",
			wantStatus: 503, wantBody: "restarting", minTook: wait,
		},
		{
			// The custom domain moves to another tenant during the wait: its
			// instance must not answer a request already bound to goteborg.
			name: "DomainMovesToOtherTenant", host: "vikarier.gso.se",
			next: func(t *testing.T, dead string) *fleet {
				return newFleet().tenant("goteborg", registry.StatusActive).instance("goteborg", "dead", dead).
					tenant("lund", registry.StatusActive, "vikarier.gso.se").
					instance("lund", "other", echoUpstream(t, "other").Listener.Addr().String())
			},
			wantStatus: 503, wantBody: "restarting",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dead := deadAddr(t)
			f := newFleet().tenant("goteborg", registry.StatusActive, "vikarier.gso.se").instance("goteborg", "dead", dead)
			tr := newRouter(t, f.table(t, nil), func(c *proxy.Config) { c.NoInstanceWait = wait })
			done := make(chan struct{})
			defer func() { <-done }()
			go func() {
				defer close(done)
				deadline := time.Now().Add(5 * time.Second)
				for testutil.ToFloat64(tr.metrics.Ejections.WithLabelValues("goteborg")) == 0 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				tr.tables.Store(f.table(t, tr.tables.Load())) // no new instance: keep waiting
				if tt.next != nil {
					time.Sleep(20 * time.Millisecond)
					tr.tables.Store(tt.next(t, dead).table(t, tr.tables.Load()))
				}
			}()
			start := time.Now()
			resp, body := tr.do(t, "POST", tt.host, "/", strings.NewReader("hello"), nil)
			took := time.Since(start)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("got %d %q want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if took < tt.minTook || took > wait+2*time.Second {
				t.Errorf("took %v, want between %v and about %v", took, tt.minTook, wait)
			}
		})
	}
}
