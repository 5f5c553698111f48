// Package exec is a libdns provider that runs an operator's command to add
// and delete TXT records, for DNS hosts that have no RFC 2136 interface.
// certmagic uses it to answer ACME DNS-01 challenges.
//
// The command is run once per record, without a shell, as
//
//	COMMAND present _acme-challenge.example.com. VALUE
//	COMMAND cleanup _acme-challenge.example.com. VALUE
//
// (the argument convention of lego's exec provider, so existing scripts
// work), with the environment of the router plus STAGESUB_DNS_ZONE (the zone,
// with trailing dot), STAGESUB_DNS_NAME (the name relative to the zone) and
// STAGESUB_DNS_TTL (seconds). Exit status 0 means done; anything else is an
// error that carries the command's output. "cleanup" of a record that does
// not exist must exit 0.
package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libdns/libdns"
)

// Actions passed as the first argument.
const (
	ActionPresent = "present"
	ActionCleanup = "cleanup"
)

// Environment variables set for the command.
const (
	EnvZone = "STAGESUB_DNS_ZONE"
	EnvName = "STAGESUB_DNS_NAME"
	EnvTTL  = "STAGESUB_DNS_TTL"
)

// DefaultTTL is the TTL passed for records appended with a zero TTL.
const DefaultTTL = 60 * time.Second

// Provider runs Command for every record. Runs are serialized, so the
// command need not be safe to run concurrently. A Provider is safe for
// concurrent use; its fields must not change after first use.
type Provider struct {
	// Command is the path of the executable (required).
	Command string
	// Timeout bounds one run; 2 minutes when zero.
	Timeout time.Duration

	mu sync.Mutex
}

// Validate reports whether Command is set and is an executable file.
func (p *Provider) Validate() error {
	if p.Command == "" {
		return errors.New("exec: command is required")
	}
	if _, err := osexec.LookPath(p.Command); err != nil {
		return fmt.Errorf("exec: command: %w", err)
	}
	return nil
}

// AppendRecords runs "present" for every TXT record and returns the
// records unchanged (with the default TTL filled in).
func (p *Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.runAll(ctx, ActionPresent, zone, recs)
}

// DeleteRecords runs "cleanup" for every TXT record.
func (p *Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.runAll(ctx, ActionCleanup, zone, recs)
}

func (p *Provider) runAll(ctx context.Context, action, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	zone = strings.TrimSuffix(zone, ".") + "."
	out := make([]libdns.Record, 0, len(recs))
	for _, r := range recs {
		rr := r.RR()
		if rr.Type != "TXT" {
			return out, fmt.Errorf("exec: record %q: type %q is not supported, only TXT", rr.Name, rr.Type)
		}
		ttl := rr.TTL
		if ttl <= 0 {
			ttl = DefaultTTL
		}
		if err := p.run(ctx, action, zone, rr.Name, rr.Data, ttl); err != nil {
			return out, err
		}
		out = append(out, libdns.TXT{Name: rr.Name, TTL: ttl, Text: rr.Data})
	}
	return out, nil
}

// maxOutput bounds how much of the command's output goes into an error.
const maxOutput = 4096

func (p *Provider) run(ctx context.Context, action, zone, name, value string, ttl time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()

	timeout := p.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	fqdn := libdns.AbsoluteName(name, zone)
	cmd := osexec.CommandContext(ctx, p.Command, action, fqdn, value)
	cmd.Env = append(os.Environ(),
		EnvZone+"="+zone,
		EnvName+"="+name,
		EnvTTL+"="+strconv.Itoa(int(ttl/time.Second)),
	)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		output := strings.TrimSpace(buf.String())
		if len(output) > maxOutput {
			output = output[:maxOutput] + "..."
		}
		return fmt.Errorf("exec: %s %s %s: %w: %s", p.Command, action, fqdn, err, output)
	}
	return nil
}

// Interface guards.
var (
	_ libdns.RecordAppender = (*Provider)(nil)
	_ libdns.RecordDeleter  = (*Provider)(nil)
)
