package consuldev

import (
	"log/slog"
	"testing"

	"github.com/hashicorp/consul/api"
)

// StartTest starts a server for a test on a free loopback port (unless
// cfg.HTTPAddr is set) and stops it in tb.Cleanup. It fails tb on error.
func StartTest(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.Logger == nil && testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	s, err := Start(cfg)
	if err != nil {
		tb.Fatalf("consuldev: start: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("consuldev: close: %v", err)
		}
	})
	return s
}

// Client returns an official consul/api client for this server. It fails tb
// on error.
func (s *Server) Client(tb testing.TB) *api.Client {
	tb.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr()
	cfg.Scheme = "http"
	cfg.Token = ""
	c, err := api.NewClient(cfg)
	if err != nil {
		tb.Fatalf("consuldev: client: %v", err)
	}
	return c
}

// testWriter sends log lines to tb.Log.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(string(p))
	return len(p), nil
}
