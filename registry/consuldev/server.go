// Package consuldev is an in-memory, single-node stand-in for the part of
// Consul's HTTP API that StageSub, certmagic's Consul storage and
// Prometheus' consul_sd use: KV (with CAS, locks and transactions),
// sessions, blocking queries, agent services and checks (run for real),
// catalog, health and status.
//
// It is a development and test tool, not a replacement for a Consul
// cluster: there is no Raft, no gossip, no ACL enforcement and no Connect.
// Every write gets the next value of one monotonically increasing index,
// like a single Raft log; the index is persisted with the state when
// Config.DataDir is set, so it never goes backwards across restarts.
package consuldev

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Version is the Consul version the stand-in claims to be. It shows up in
// agent/self, in the node meta "consul-version" and in `version -format=json`.
const Version = "1.22.0"

// Config configures a Server. The zero value (plus HTTPAddr) is usable.
type Config struct {
	HTTPAddr   string       // listen address; "127.0.0.1:0" picks a free port (default)
	DataDir    string       // "" = no persistence; otherwise state survives restarts
	NodeName   string       // default "stagesub-dev"
	Datacenter string       // default "dc1"
	Logger     *slog.Logger // default: discard

	// NodeID is the node's UUID; default: derived from the persisted state or random.
	NodeID string
	// NodeMeta is merged into the node's meta (after consul-version and
	// consul-network-segment).
	NodeMeta map[string]string
	// ServerPort is the (fake) RPC port reported by status/leader and the
	// "consul" service. Default 8300.
	ServerPort int
	// ReapInterval is how often services whose check has been critical for
	// longer than DeregisterCriticalServiceAfter are removed. Default 1s
	// (real Consul: 30s with a 1 minute floor; the stand-in honours smaller
	// values so tests stay fast).
	ReapInterval time.Duration
	// SessionTTLMin is the smallest session TTL accepted (Consul's
	// session_ttl_min). Default 10s; tests may lower it.
	SessionTTLMin time.Duration
	// SnapshotInterval is the debounce of snapshot writes after a change
	// (only with DataDir). Default 200ms. Close always writes a final one.
	SnapshotInterval time.Duration
}

// Server is a running stand-in. All methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ln     net.Listener
	http   *http.Server
	nodeID string

	snapMu sync.Mutex // serialises snapshot encode+write

	mu      sync.Mutex // guards everything below and all state
	changed chan struct{}
	dirty   bool
	closed  bool
	st      *state
	agent   *agentState

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeErr error
	once     sync.Once
}

// Start validates cfg, restores state from cfg.DataDir (if set) and starts
// serving. The server is listening when Start returns.
func Start(cfg Config) (*Server, error) {
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.NodeName == "" {
		cfg.NodeName = "stagesub-dev"
	}
	if cfg.Datacenter == "" {
		cfg.Datacenter = "dc1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ServerPort == 0 {
		cfg.ServerPort = 8300
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = time.Second
	}
	if cfg.SessionTTLMin <= 0 {
		cfg.SessionTTLMin = 10 * time.Second
	}
	if cfg.SnapshotInterval <= 0 {
		cfg.SnapshotInterval = 200 * time.Millisecond
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		changed: make(chan struct{}),
		st:      newState(),
		agent:   newAgentState(),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	var snap *snapshot
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("consuldev: data dir: %w", err)
		}
		var err error
		snap, err = readSnapshot(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("consuldev: restore: %w", err)
		}
	}
	s.nodeID = cfg.NodeID
	if snap != nil {
		s.st = snap.State
		s.st.fixup()
		if s.nodeID == "" {
			s.nodeID = snap.NodeID
		}
	}
	if s.nodeID == "" {
		s.nodeID = newUUID()
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("consuldev: listen %s: %w", cfg.HTTPAddr, err)
	}
	s.ln = ln

	s.mu.Lock()
	s.registerSelf()
	if snap != nil {
		s.restoreAgent(snap.Agent)
		s.restoreSessions()
	}
	s.commit()
	s.mu.Unlock()

	s.http = &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("consuldev: serve", "err", err)
		}
	}()
	go s.housekeeping()
	s.log.Info("consuldev: listening", "addr", s.Addr(), "node", cfg.NodeName, "data_dir", cfg.DataDir)
	return s, nil
}

// Addr returns the listen address as host:port, suitable for CONSUL_HTTP_ADDR.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server: it stops serving (ending blocking queries),
// stops all check runners and timers and, with a DataDir, writes the final
// snapshot. It is safe to call more than once.
func (s *Server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.mu.Lock()
		s.closed = true
		close(s.changed) // wake blocking queries; they see closed and return
		s.changed = make(chan struct{})
		s.mu.Unlock()
		s.cancel()
		err := s.http.Shutdown(ctx)
		if err != nil {
			_ = s.http.Close()
		}
		s.mu.Lock()
		s.agent.stopAll()
		s.stopSessionTimers()
		s.mu.Unlock()
		s.wg.Wait()
		if s.cfg.DataDir != "" {
			if werr := s.writeSnapshot(); werr != nil {
				s.closeErr = werr
			}
		}
		s.log.Info("consuldev: stopped", "addr", s.Addr())
	})
	return s.closeErr
}

// commit publishes a change: wakes every blocking query and marks the state
// dirty for the next snapshot. Caller holds s.mu.
func (s *Server) commit() {
	close(s.changed)
	s.changed = make(chan struct{})
	s.dirty = true
}

// housekeeping writes debounced snapshots and reaps services whose checks
// have been critical too long. It exits when the server closes.
func (s *Server) housekeeping() {
	defer s.wg.Done()
	snapT := time.NewTicker(s.cfg.SnapshotInterval)
	defer snapT.Stop()
	reapT := time.NewTicker(s.cfg.ReapInterval)
	defer reapT.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-snapT.C:
			if s.cfg.DataDir == "" {
				continue
			}
			if err := s.writeSnapshotIfDirty(); err != nil {
				s.log.Error("consuldev: snapshot", "err", err)
			}
		case <-reapT.C:
			s.reapCritical(time.Now())
		}
	}
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// leaderAddr is the fake RPC address reported as leader and peer.
func (s *Server) leaderAddr() string {
	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil || host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%d", host, s.cfg.ServerPort)
}

// nodeAddr is the address of this node in the catalog.
func (s *Server) nodeAddr() string {
	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil || host == "" || host == "::" || host == "0.0.0.0" {
		return "127.0.0.1"
	}
	return host
}
