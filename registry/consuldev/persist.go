package consuldev

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/consul/api"
)

// snapshotFile is the state file inside Config.DataDir.
const snapshotFile = "consuldev-state.json"

const snapshotFormat = 1

type snapshot struct {
	Format  int
	Version string
	NodeID  string
	Written time.Time
	State   *state
	Agent   agentSnapshot
}

type agentSnapshot struct {
	Services []*api.AgentService
	Checks   []checkSnapshot
}

type checkSnapshot struct {
	Def   checkDef
	Check *api.HealthCheck
}

func readSnapshot(dir string) (*snapshot, error) {
	b, err := os.ReadFile(filepath.Join(dir, snapshotFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, fmt.Errorf("decode %s: %w", snapshotFile, err)
	}
	if snap.Format != snapshotFormat || snap.State == nil {
		return nil, fmt.Errorf("%s: unsupported format %d", snapshotFile, snap.Format)
	}
	return &snap, nil
}

// encodeSnapshot serialises the whole state. Caller holds s.mu.
func (s *Server) encodeSnapshot() ([]byte, error) {
	snap := snapshot{Format: snapshotFormat, Version: Version, NodeID: s.nodeID, Written: time.Now().UTC(), State: s.st}
	for _, svc := range s.agent.services {
		snap.Agent.Services = append(snap.Agent.Services, svc.Service)
	}
	for _, c := range s.agent.checks {
		snap.Agent.Checks = append(snap.Agent.Checks, checkSnapshot{Def: c.Def, Check: c.Check})
	}
	return json.Marshal(&snap)
}

func (s *Server) writeSnapshotIfDirty() error {
	s.snapMu.Lock() // encode and write in order: a newer state is never overwritten by an older one
	defer s.snapMu.Unlock()
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	s.dirty = false
	b, err := s.encodeSnapshot()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return writeFileAtomic(s.cfg.DataDir, snapshotFile, b)
}

// writeSnapshot writes the state unconditionally.
func (s *Server) writeSnapshot() error {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.mu.Lock()
	s.dirty = false
	b, err := s.encodeSnapshot()
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("consuldev: snapshot: %w", err)
	}
	if err := writeFileAtomic(s.cfg.DataDir, snapshotFile, b); err != nil {
		return fmt.Errorf("consuldev: snapshot: %w", err)
	}
	return nil
}

// writeFileAtomic writes dir/name through a synced temp file and a rename,
// so a crash leaves either the old or the new file, never a torn one.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// restoreAgent re-creates local services and checks from a snapshot and
// restarts their runners. Caller holds s.mu.
func (s *Server) restoreAgent(a agentSnapshot) {
	for _, svc := range a.Services {
		s.agent.services[svc.ID] = &agentService{Service: svc}
	}
	now := time.Now()
	for _, cs := range a.Checks {
		c := &agentCheck{Def: cs.Def, Check: cs.Check}
		c.Check.ServiceTags = nonNil(c.Check.ServiceTags)
		if c.Check.Status == api.HealthCritical {
			c.criticalSince = now
		}
		s.agent.checks[cs.Def.CheckID] = c
		s.startCheck(c)
	}
}
