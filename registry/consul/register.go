package consul

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
)

// Registration defaults, as documented on registry.Registration.
const (
	DefaultHealthPath      = "/healthz"
	DefaultCheckInterval   = 2 * time.Second
	DefaultCheckTimeout    = 1 * time.Second
	DefaultDeregisterAfter = time.Minute
)

// Register registers one instance with the local Consul agent of c: service
// r.Service with ID r.ID (generated and unique when empty), r.Address and
// r.Port, Meta[registry.MetaTenant] and tag registry.TenantTag for app
// instances, Meta[registry.MetaVersion], and an HTTP check on
// http://Address:Port/HealthPath with the check interval, timeout and
// DeregisterCriticalServiceAfter of r (defaults above). Consul marks the
// instance critical until its first check passes.
//
// It returns the ID used and a deregister func, which removes the instance
// and is safe to call more than once and concurrently; an instance that is
// already gone is not an error. An invalid r is EINVALID and registers nothing.
func Register(ctx context.Context, c *api.Client, r registry.Registration) (id string, deregister func(context.Context) error, err error) {
	reg, err := serviceRegistration(r)
	if err != nil {
		return "", nil, err
	}
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := c.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return "", nil, fmt.Errorf("consul: register %s %s: %w", reg.Name, reg.ID, err)
	}
	id = reg.ID
	var (
		mu   sync.Mutex
		done bool
	)
	deregister = func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return nil
		}
		err := c.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
		var se api.StatusError
		if err != nil && !(errors.As(err, &se) && se.Code == http.StatusNotFound) {
			return fmt.Errorf("consul: deregister %s: %w", id, err)
		}
		done = true
		return nil
	}
	return id, deregister, nil
}

// serviceRegistration validates r, applies the defaults and builds the agent
// registration.
func serviceRegistration(r registry.Registration) (*api.AgentServiceRegistration, error) {
	if r.Service == "" {
		return nil, registry.Errorf(registry.EINVALID, "registration: service name is empty")
	}
	if r.Service == registry.ServiceApp {
		if r.Tenant == "" {
			return nil, registry.Errorf(registry.EINVALID, "registration of %s: tenant is required", r.Service)
		}
		if err := registry.ValidateSlug(r.Tenant); err != nil {
			return nil, err
		}
	} else if r.Tenant != "" {
		return nil, registry.Errorf(registry.EINVALID, "registration of %s: tenant %q is only for %s", r.Service, r.Tenant, registry.ServiceApp)
	}
	addr := strings.TrimSpace(r.Address)
	if addr == "" {
		return nil, registry.Errorf(registry.EINVALID, "registration of %s: address is empty", r.Service)
	}
	if ip := net.ParseIP(addr); ip != nil && ip.IsUnspecified() {
		return nil, registry.Errorf(registry.EINVALID, "registration of %s: address %s is not reachable; advertise a concrete address", r.Service, addr)
	}
	if r.Port <= 0 || r.Port > 65535 {
		return nil, registry.Errorf(registry.EINVALID, "registration of %s: port %d out of range 1-65535", r.Service, r.Port)
	}
	path := r.HealthPath
	if path == "" {
		path = DefaultHealthPath
	}
	if !strings.HasPrefix(path, "/") {
		return nil, registry.Errorf(registry.EINVALID, "registration of %s: health path %q must start with '/'", r.Service, path)
	}
	interval, err := durationOr(r.Service, "check interval", r.CheckInterval, DefaultCheckInterval)
	if err != nil {
		return nil, err
	}
	timeout, err := durationOr(r.Service, "check timeout", r.CheckTimeout, DefaultCheckTimeout)
	if err != nil {
		return nil, err
	}
	deregAfter, err := durationOr(r.Service, "deregister-after", r.DeregisterAfter, DefaultDeregisterAfter)
	if err != nil {
		return nil, err
	}

	id := r.ID
	if id == "" {
		id, err = newID(r.Service, r.Tenant)
		if err != nil {
			return nil, err
		}
	}
	meta := make(map[string]string, len(r.Meta)+2)
	for k, v := range r.Meta {
		meta[k] = v
	}
	if r.Tenant != "" {
		meta[registry.MetaTenant] = r.Tenant
	}
	if r.Version != "" {
		meta[registry.MetaVersion] = r.Version
	}
	tags := make([]string, 0, len(r.Tags)+1)
	seen := make(map[string]bool, len(r.Tags)+1)
	add := func(t string) {
		if t != "" && !seen[t] {
			seen[t] = true
			tags = append(tags, t)
		}
	}
	for _, t := range r.Tags {
		add(t)
	}
	if r.Tenant != "" {
		add(registry.TenantTag(r.Tenant))
	}
	return &api.AgentServiceRegistration{
		ID:      id,
		Name:    r.Service,
		Tags:    tags,
		Address: addr,
		Port:    r.Port,
		Meta:    meta,
		Check: &api.AgentServiceCheck{
			Name:                           r.Service + " health",
			HTTP:                           "http://" + net.JoinHostPort(addr, strconv.Itoa(r.Port)) + path,
			Method:                         http.MethodGet,
			Interval:                       interval.String(),
			Timeout:                        timeout.String(),
			DeregisterCriticalServiceAfter: deregAfter.String(),
		},
	}, nil
}

func durationOr(service, what string, d, def time.Duration) (time.Duration, error) {
	switch {
	case d < 0:
		return 0, registry.Errorf(registry.EINVALID, "registration of %s: %s %v is negative", service, what, d)
	case d == 0:
		return def, nil
	}
	return d, nil
}

// newID returns "<service>-<tenant>-<16 hex digits>" ("<service>-<hex>"
// without a tenant): readable in the Consul UI and unique.
func newID(service, tenant string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("consul: generate instance ID: %w", err)
	}
	if tenant == "" {
		return service + "-" + hex.EncodeToString(b[:]), nil
	}
	return service + "-" + tenant + "-" + hex.EncodeToString(b[:]), nil
}
