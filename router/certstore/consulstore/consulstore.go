// Package consulstore is a certmagic.Storage on Consul KV, with locks built
// on Consul sessions, so that several router replicas share certificates,
// ACME accounts and challenge tokens: one replica obtains or renews a
// certificate while the others wait on its lock and then load the result.
//
// KV layout under the prefix P (default "stagesub/certmagic"):
//
//	P/data/<certmagic key>   the stored value; KVPair.Flags holds the
//	                         modification time in Unix nanoseconds
//	P/locks/<lock name>      a Consul lock (session-held key)
//
// The Storage keeps certmagic's contract: Load, List and Stat of a missing
// key return an error that satisfies errors.Is(err, fs.ErrNotExist); Delete
// of a missing key returns nil and Delete of a prefix removes the subtree;
// List returns full keys; Stat of a prefix is not terminal; Lock blocks
// until acquired or ctx is done and excludes other goroutines of the same
// process as well as other processes.
package consulstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hashicorp/consul/api"
)

// DefaultPrefix is the KV prefix used when Options.Prefix is empty.
const DefaultPrefix = "stagesub/certmagic"

// Options configures New.
type Options struct {
	// Prefix is the KV prefix without trailing slash; DefaultPrefix if empty.
	Prefix string
	// SessionTTL is the TTL of lock sessions (renewed while held); 15s if
	// zero. A crashed holder's lock is freed after SessionTTL plus LockDelay.
	SessionTTL time.Duration
	// LockDelay is Consul's lock-delay for lock sessions; 15s if zero.
	LockDelay time.Duration
	// LockWaitTime is the longest blocking query while waiting for a lock,
	// and so bounds how late a cancelled Lock returns; 5s if zero.
	LockWaitTime time.Duration
	// Logger receives warnings about lost locks; slog.Default() if nil.
	Logger *slog.Logger
}

// Storage implements certmagic.Storage on Consul KV. Create it with New;
// it is safe for concurrent use and must not be copied.
type Storage struct {
	kv     *api.KV
	client *api.Client
	data   string // "P/data/"
	locks  string // "P/locks/"
	opts   Options
	logger *slog.Logger

	mu   sync.Mutex
	sems map[string]chan struct{} // per lock name, capacity 1: in-process exclusion
	held map[string]*api.Lock     // lock name → Consul lock while held
}

// New returns a Storage that keeps its data in Consul through c.
func New(c *api.Client, o Options) *Storage {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	o.Prefix = strings.Trim(o.Prefix, "/")
	if o.SessionTTL == 0 {
		o.SessionTTL = 15 * time.Second
	}
	if o.LockDelay == 0 {
		o.LockDelay = 15 * time.Second
	}
	if o.LockWaitTime == 0 {
		o.LockWaitTime = 5 * time.Second
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return &Storage{
		kv:     c.KV(),
		client: c,
		data:   o.Prefix + "/data/",
		locks:  o.Prefix + "/locks/",
		opts:   o,
		logger: logger,
		sems:   make(map[string]chan struct{}),
		held:   make(map[string]*api.Lock),
	}
}

// clean normalizes a certmagic key: no leading or trailing slash.
func clean(key string) string { return strings.Trim(path.Clean("/"+key), "/") }

func (s *Storage) kvKey(key string) string { return s.data + clean(key) }

func notExist(key string) error {
	return fmt.Errorf("consulstore: %q: %w", key, fs.ErrNotExist)
}

// Store writes value at key, recording the time in Flags.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	p := &api.KVPair{Key: s.kvKey(key), Value: value, Flags: uint64(time.Now().UnixNano())}
	if _, err := s.kv.Put(p, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("consulstore: store %q: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an fs.ErrNotExist error.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	p, _, err := s.kv.Get(s.kvKey(key), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consulstore: load %q: %w", key, err)
	}
	if p == nil {
		return nil, notExist(key)
	}
	return p.Value, nil
}

// Delete removes key and everything below it. A missing key is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	w := (&api.WriteOptions{}).WithContext(ctx)
	k := s.kvKey(key)
	if _, err := s.kv.Delete(k, w); err != nil {
		return fmt.Errorf("consulstore: delete %q: %w", key, err)
	}
	if _, err := s.kv.DeleteTree(k+"/", w); err != nil {
		return fmt.Errorf("consulstore: delete %q: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a stored value or a prefix of one.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// Stat describes key: a stored value (terminal, with size and modification
// time) or a prefix of stored values (not terminal).
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	p, _, err := s.kv.Get(s.kvKey(key), q)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("consulstore: stat %q: %w", key, err)
	}
	if p != nil {
		return certmagic.KeyInfo{
			Key:        key,
			Modified:   time.Unix(0, int64(p.Flags)),
			Size:       int64(len(p.Value)),
			IsTerminal: true,
		}, nil
	}
	keys, _, err := s.kv.Keys(s.dirPrefix(key), "/", q)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("consulstore: stat %q: %w", key, err)
	}
	if len(keys) == 0 {
		return certmagic.KeyInfo{}, notExist(key)
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// dirPrefix is the KV prefix of the children of key ("" = the root).
func (s *Storage) dirPrefix(key string) string {
	if c := clean(key); c != "" {
		return s.data + c + "/"
	}
	return s.data
}

// List returns the full keys (certmagic form, e.g. "certificates/ca/x")
// below dir: its immediate children, prefixes included, or when recursive
// every value and every prefix below it. A dir with nothing below it gives
// an fs.ErrNotExist error.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	prefix := s.dirPrefix(dir)
	sep := "/"
	if recursive {
		sep = ""
	}
	keys, _, err := s.kv.Keys(prefix, sep, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consulstore: list %q: %w", dir, err)
	}
	if len(keys) == 0 {
		return nil, notExist(dir)
	}
	base := clean(dir) // certmagic form of dir, "" for the root
	if base != "" {
		base += "/"
	}
	seen := make(map[string]bool)
	var out []string
	for _, k := range keys {
		rel := strings.TrimSuffix(strings.TrimPrefix(k, prefix), "/")
		if rel == "" {
			continue
		}
		if recursive {
			// Report the implicit prefixes between dir and k too, as a
			// file system walk reports directories.
			for i, c := range rel {
				if c == '/' && !seen[base+rel[:i]] {
					seen[base+rel[:i]] = true
					out = append(out, base+rel[:i])
				}
			}
		}
		if !seen[base+rel] {
			seen[base+rel] = true
			out = append(out, base+rel)
		}
	}
	sort.Strings(out)
	return out, nil
}

// sem returns the in-process semaphore for name.
func (s *Storage) sem(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.sems[name]
	if !ok {
		c = make(chan struct{}, 1)
		s.sems[name] = c
	}
	return c
}

// Lock acquires the lock name, blocking until it is held or ctx is done
// (then it returns ctx's error). It excludes other goroutines of this
// process (an in-process semaphore) and other processes (a Consul lock on
// P/locks/<name> held by a session with SessionTTL, renewed while held).
func (s *Storage) Lock(ctx context.Context, name string) error {
	sem := s.sem(name)
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("consulstore: lock %q: %w", name, ctx.Err())
	}
	release := func() { <-sem }

	l, err := s.client.LockOpts(&api.LockOptions{
		Key:          s.locks + name,
		SessionName:  "certmagic lock " + name,
		SessionTTL:   s.opts.SessionTTL.String(),
		LockDelay:    s.opts.LockDelay,
		LockWaitTime: s.opts.LockWaitTime,
	})
	if err != nil {
		release()
		return fmt.Errorf("consulstore: lock %q: %w", name, err)
	}
	lost, err := l.Lock(ctx.Done())
	if err != nil {
		release()
		return fmt.Errorf("consulstore: lock %q: %w", name, err)
	}
	if lost == nil { // (nil, nil): stopped before acquiring
		release()
		if ctx.Err() != nil {
			return fmt.Errorf("consulstore: lock %q: %w", name, ctx.Err())
		}
		return fmt.Errorf("consulstore: lock %q: not acquired", name)
	}
	if ctx.Err() != nil { // acquired just as ctx ended: give it back
		_ = l.Unlock()
		release()
		return fmt.Errorf("consulstore: lock %q: %w", name, ctx.Err())
	}

	s.mu.Lock()
	s.held[name] = l
	s.mu.Unlock()
	go func() {
		<-lost
		s.mu.Lock()
		still := s.held[name] == l
		s.mu.Unlock()
		if still {
			s.logger.Warn("consulstore: lock lost while held (session invalidated)", "lock", name)
		}
	}()
	return nil
}

// Unlock releases the lock name taken by Lock in this process.
func (s *Storage) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	l, ok := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("consulstore: unlock %q: not held", name)
	}
	defer func() { <-s.sem(name) }()
	err := l.Unlock()
	if derr := l.Destroy(); derr != nil && !errors.Is(derr, api.ErrLockInUse) {
		s.logger.Debug("consulstore: destroy lock key", "lock", name, "err", derr)
	}
	if err != nil && !errors.Is(err, api.ErrLockNotHeld) {
		return fmt.Errorf("consulstore: unlock %q: %w", name, err)
	}
	return nil
}

// String describes the storage for certmagic's logs.
func (s *Storage) String() string { return "consul:" + s.opts.Prefix }

// Interface guard.
var _ certmagic.Storage = (*Storage)(nil)
