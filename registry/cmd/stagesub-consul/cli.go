package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"stagesub.dev/registry/consuldev"
)

// errDone means the command completed during Load (e.g. `version`).
var errDone = errors.New("done")

// Main is the stagesub-consul program: Load parses the command line, Run
// serves until ctx is done, Close stops the server (writing the final
// snapshot when a data dir is set).
type Main struct {
	Config consuldev.Config

	stdout, stderr io.Writer
	server         *consuldev.Server
}

// NewMain returns a Main writing to the given streams.
func NewMain(stdout, stderr io.Writer) *Main {
	return &Main{stdout: stdout, stderr: stderr}
}

// consulConfig is the part of Consul's JSON agent configuration the stand-in
// reads; everything else is accepted and ignored.
type consulConfig struct {
	NodeName   *string           `json:"node_name"`
	NodeID     *string           `json:"node_id"`
	NodeMeta   map[string]string `json:"node_meta"`
	Datacenter *string           `json:"datacenter"`
	DataDir    *string           `json:"data_dir"`
	ClientAddr *string           `json:"client_addr"`
	BindAddr   *string           `json:"bind_addr"`
	LogLevel   *string           `json:"log_level"`
	Ports      map[string]int    `json:"ports"`
	Addresses  map[string]string `json:"addresses"`
}

// agentFlags is the merged result of flags and config files.
type agentFlags struct {
	dev        bool
	client     string
	httpPort   int
	serverPort int
	dataDir    string
	nodeName   string
	nodeID     string
	datacenter string
	logLevel   string
	nodeMeta   map[string]string
	httpAddr   string
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// Load parses args (without the program name). environ is accepted for
// symmetry with the other StageSub mains; the stand-in reads no variables.
func (m *Main) Load(args, environ []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: stagesub-consul agent|version [flags]")
	}
	switch args[0] {
	case "version", "-version", "--version":
		return m.version(args[1:])
	case "agent":
		return m.loadAgent(args[1:])
	default:
		return fmt.Errorf("unknown command %q (want agent or version)", args[0])
	}
}

func (m *Main) version(args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(m.stderr)
	format := fs.String("format", "", "output format: json or empty")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *format {
	case "json":
		b, _ := json.MarshalIndent(map[string]any{
			"Version": consuldev.Version, "Revision": "stagesub", "Prerelease": "", "FIPS": "",
			"BuildDate": "2026-01-01T00:00:00Z", "RPC": map[string]int{"Default": 4, "Min": 2, "Max": 3},
		}, "", "  ")
		fmt.Fprintln(m.stdout, string(b))
	case "":
		fmt.Fprintf(m.stdout, "Consul v%s (stagesub-consul in-memory stand-in)\nRevision stagesub\n", consuldev.Version)
	default:
		return fmt.Errorf("version: unknown format %q", *format)
	}
	return errDone
}

// bind defines the agent flags that set f's fields on fs.
func (f *agentFlags) bind(fs *flag.FlagSet) {
	fs.BoolVar(&f.dev, "dev", false, "development mode (in memory unless -data-dir is given)")
	fs.StringVar(&f.client, "client", "", "address the HTTP API binds to (default 127.0.0.1)")
	fs.IntVar(&f.httpPort, "http-port", 0, "HTTP API port (default 8500)")
	fs.IntVar(&f.serverPort, "server-port", 0, "reported server RPC port (default 8300)")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for the persistent state (empty: in memory)")
	fs.StringVar(&f.nodeName, "node", "", "node name (default stagesub-dev)")
	fs.StringVar(&f.nodeID, "node-id", "", "node UUID")
	fs.StringVar(&f.datacenter, "datacenter", "", "datacenter (default dc1)")
	fs.StringVar(&f.logLevel, "log-level", "", "log level: trace, debug, info, warn, error")
}

func (m *Main) loadAgent(args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(m.stderr)
	var files multiFlag
	var f agentFlags
	f.bind(fs)
	fs.Var(&files, "config-file", "Consul JSON config file (repeatable, merged in order)")
	fs.Var(&files, "config-dir", "directory whose *.json files are read in lexical order (repeatable)")
	// Accepted for compatibility, ignored.
	for _, name := range []string{"bind", "advertise", "serf-lan-port", "dns-port", "grpc-port", "bootstrap-expect", "encrypt", "hcl", "config-format"} {
		fs.String(name, "", "ignored")
	}
	for _, name := range []string{"server", "bootstrap", "ui", "disable-host-node-id"} {
		fs.Bool(name, false, "ignored")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("agent: unexpected arguments %q", fs.Args())
	}
	// merged is bound to a second flag set so that the flags given, which
	// override the config files, can be copied onto it by name.
	var merged agentFlags
	mfs := flag.NewFlagSet("agent", flag.ContinueOnError)
	merged.bind(mfs)
	for _, path := range files {
		paths := []string{path}
		if st, err := os.Stat(path); err == nil && st.IsDir() {
			paths, _ = filepath.Glob(filepath.Join(path, "*.json")) // sorted
		}
		for _, p := range paths {
			if err := readConsulConfig(p, &merged); err != nil {
				return err
			}
		}
	}
	// Flags override config files.
	fs.Visit(func(fl *flag.Flag) {
		if mf := mfs.Lookup(fl.Name); mf != nil {
			_ = mf.Value.Set(fl.Value.String()) // parsed once already
		}
	})
	if merged.httpPort < 0 || merged.httpPort > 65535 {
		return fmt.Errorf("agent: invalid http port %d", merged.httpPort)
	}
	host := merged.httpAddr
	if host == "" {
		host = merged.client
	}
	if host == "" {
		host = "127.0.0.1"
	}
	port := merged.httpPort
	if port == 0 {
		port = 8500
	}
	level := slog.LevelInfo
	switch strings.ToLower(merged.logLevel) {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "err", "error":
		level = slog.LevelError
	}
	m.Config = consuldev.Config{
		HTTPAddr:   net.JoinHostPort(host, strconv.Itoa(port)),
		DataDir:    merged.dataDir,
		NodeName:   merged.nodeName,
		NodeID:     merged.nodeID,
		NodeMeta:   merged.nodeMeta,
		Datacenter: merged.datacenter,
		ServerPort: merged.serverPort,
		Logger:     slog.New(slog.NewTextHandler(m.stderr, &slog.HandlerOptions{Level: level})),
	}
	return nil
}

func readConsulConfig(path string, f *agentFlags) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var c consulConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("config file %s: only JSON is supported: %w", path, err)
	}
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&f.nodeName, c.NodeName)
	set(&f.nodeID, c.NodeID)
	set(&f.datacenter, c.Datacenter)
	set(&f.dataDir, c.DataDir)
	set(&f.client, c.ClientAddr)
	set(&f.logLevel, c.LogLevel)
	if c.NodeMeta != nil {
		if f.nodeMeta == nil {
			f.nodeMeta = map[string]string{}
		}
		for k, v := range c.NodeMeta {
			f.nodeMeta[k] = v
		}
	}
	if p, ok := c.Ports["http"]; ok {
		f.httpPort = p
	}
	if p, ok := c.Ports["server"]; ok {
		f.serverPort = p
	}
	if a, ok := c.Addresses["http"]; ok && a != "" {
		f.httpAddr = a
	}
	return nil
}

// Run starts the server and blocks until ctx is done.
func (m *Main) Run(ctx context.Context) error {
	s, err := consuldev.Start(m.Config)
	if err != nil {
		return err
	}
	m.server = s
	fmt.Fprintf(m.stderr, "stagesub-consul: HTTP API on http://%s (node %q, data dir %q)\n", s.Addr(), m.Config.NodeName, m.Config.DataDir)
	<-ctx.Done()
	return nil
}

// Close stops the server and writes the final snapshot.
func (m *Main) Close() error {
	if m.server == nil {
		return nil
	}
	return m.server.Close()
}

// Server returns the running server (nil before Run).
func (m *Main) Server() *consuldev.Server { return m.server }
