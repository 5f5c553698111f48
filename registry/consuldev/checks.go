package consuldev

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// startCheck starts the runner of a local check: a timer for TTL checks, a
// goroutine that probes on every interval for HTTP, TCP and UDP checks.
// Other types (gRPC, H2PING, alias, OS service) keep the status they were
// registered with. Caller holds s.mu.
func (s *Server) startCheck(c *agentCheck) {
	if s.closed {
		return
	}
	d := c.Def
	switch d.typ() {
	case "ttl":
		ttl := time.Duration(d.TTL)
		c.ttlDeadline = time.Now().Add(ttl)
		id := d.CheckID
		var timer *time.Timer
		timer = time.AfterFunc(ttl, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			cur := s.agent.checks[id]
			if cur == nil || cur.ttlTimer != timer || s.closed || time.Now().Before(cur.ttlDeadline) {
				return
			}
			out := "TTL expired"
			if cur.Check.Output != "" && !strings.HasPrefix(cur.Check.Output, "TTL expired") {
				out = "TTL expired (last output before timeout follows): " + cur.Check.Output
			} else if cur.Check.Output != "" {
				out = cur.Check.Output
			}
			s.setCheckStatus(cur, api.HealthCritical, out)
		})
		c.ttlTimer = timer
	case "http", "tcp", "udp":
		stop := make(chan struct{})
		c.stop = stop
		s.wg.Add(1)
		go s.runCheck(c, stop)
	}
}

// runCheck probes the check now and then on every interval until stop is
// closed or the server shuts down.
func (s *Server) runCheck(c *agentCheck, stop <-chan struct{}) {
	defer s.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("consuldev: check runner panic", "check", c.Def.CheckID, "panic", r)
		}
	}()
	d := c.Def
	interval := time.Duration(d.Interval)
	timeout := time.Duration(d.Timeout)
	if timeout <= 0 {
		timeout = 10 * time.Second
		if interval < timeout {
			timeout = interval
		}
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		status, output := probe(ctx, &d)
		cancel()
		select {
		case <-stop:
			return
		case <-s.ctx.Done():
			return
		default:
		}
		s.mu.Lock()
		if s.agent.checks[d.CheckID] == c && c.stop != nil {
			s.applyProbe(c, status, truncateOutput(output, d.OutputMaxSize))
		}
		s.mu.Unlock()
		select {
		case <-stop:
			return
		case <-s.ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// applyProbe applies a probe result with the SuccessBeforePassing and
// FailuresBefore{Warning,Critical} thresholds. Caller holds s.mu.
func (s *Server) applyProbe(c *agentCheck, status, output string) {
	d := c.Def
	if status == api.HealthPassing || status == api.HealthWarning {
		c.successes++
		c.failures = 0
		if c.successes >= d.SuccessBeforePassing {
			s.setCheckStatus(c, status, output)
		}
		return
	}
	c.failures++
	c.successes = 0
	fbw := d.FailuresBeforeWarning
	if fbw == 0 {
		fbw = d.FailuresBeforeCritical
	}
	switch {
	case c.failures >= d.FailuresBeforeCritical:
		s.setCheckStatus(c, api.HealthCritical, output)
	case c.failures >= fbw:
		s.setCheckStatus(c, api.HealthWarning, output)
	}
}

// probe runs one HTTP, TCP or UDP check.
func probe(ctx context.Context, d *checkDef) (status, output string) {
	switch d.typ() {
	case "http":
		return probeHTTP(ctx, d)
	case "tcp":
		return probeTCP(ctx, d)
	case "udp":
		return probeUDP(ctx, d)
	}
	return api.HealthCritical, "unsupported check type"
}

func probeHTTP(ctx context.Context, d *checkDef) (string, string) {
	method := d.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if d.Body != "" {
		body = strings.NewReader(d.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.HTTP, body)
	if err != nil {
		return api.HealthCritical, err.Error()
	}
	for k, vs := range d.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "Consul Health Check")
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "text/plain, text/*, */*")
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	tr := &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: d.TLSSkipVerify, ServerName: d.TLSServerName}, //nolint:gosec // user-requested
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	if d.DisableRedirects {
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	resp, err := client.Do(req)
	if err != nil {
		return api.HealthCritical, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, outputMaxSize))
	out := fmt.Sprintf("HTTP %s %s: %s Output: %s", method, d.HTTP, resp.Status, string(b))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return api.HealthPassing, out
	case resp.StatusCode == http.StatusTooManyRequests:
		return api.HealthWarning, out
	default:
		return api.HealthCritical, out
	}
}

func probeTCP(ctx context.Context, d *checkDef) (string, string) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", d.TCP)
	if err != nil {
		return api.HealthCritical, err.Error()
	}
	defer conn.Close()
	if d.TCPUseTLS {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: d.TLSSkipVerify, ServerName: d.TLSServerName}) //nolint:gosec // user-requested
		if err := tc.HandshakeContext(ctx); err != nil {
			return api.HealthCritical, err.Error()
		}
	}
	return api.HealthPassing, fmt.Sprintf("TCP connect %s: Success", d.TCP)
}

func probeUDP(ctx context.Context, d *checkDef) (string, string) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "udp", d.UDP)
	if err != nil {
		return api.HealthCritical, err.Error()
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte{0}); err != nil {
		return api.HealthCritical, err.Error()
	}
	buf := make([]byte, 1)
	if _, err := conn.Read(buf); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// No answer but no ICMP error either: treated as reachable, like Consul.
			return api.HealthPassing, fmt.Sprintf("UDP connect %s: Success", d.UDP)
		}
		return api.HealthCritical, err.Error()
	}
	return api.HealthPassing, fmt.Sprintf("UDP connect %s: Success", d.UDP)
}
