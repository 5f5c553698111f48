package registry

import (
	"strings"
)

// Slug limits: a lowercase DNS label of 2 to 40 characters.
const (
	MinSlugLen = 2
	MaxSlugLen = 40
)

// reserved holds labels that are never tenant slugs because the platform
// uses them, or may one day, under the base domain.
var reserved = map[string]bool{
	"admin": true, "www": true, "api": true, "consul": true, "metrics": true,
	"app": true, "apps": true, "status": true, "mail": true, "smtp": true,
	"imap": true, "pop": true, "ftp": true, "ns": true, "ns1": true, "ns2": true,
	"dns": true, "static": true, "assets": true, "cdn": true, "docs": true,
	"help": true, "support": true, "blog": true, "dashboard": true, "login": true,
	"auth": true, "sso": true, "oauth": true, "router": true, "prometheus": true,
	"grafana": true, "nomad": true, "vault": true, "stagesub": true, "test": true,
	"staging": true, "dev": true, "localhost": true, "root": true, "system": true,
	"postgres": true, "acme": true, "_acme-challenge": true, "autoconfig": true,
	"autodiscover": true, "webmail": true, "billing": true, "internal": true,
}

// IsReserved reports whether label is reserved and can never be a slug.
func IsReserved(label string) bool { return reserved[strings.ToLower(label)] }

// ValidateSlug returns an EINVALID *Error explaining why s is not a valid
// tenant slug, or nil. A slug is a lowercase DNS label (a-z, 0-9 and '-', not
// starting or ending with '-', no "--" which IDNA reserves), 2 to 40
// characters, and not reserved.
func ValidateSlug(s string) error {
	if len(s) < MinSlugLen || len(s) > MaxSlugLen {
		return Errorf(EINVALID, "slug %q must be %d to %d characters long", s, MinSlugLen, MaxSlugLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(s)-1 {
				return Errorf(EINVALID, "slug %q must not start or end with '-'", s)
			}
		default:
			return Errorf(EINVALID, "slug %q may only contain lowercase letters a-z, digits and '-'", s)
		}
	}
	if strings.Contains(s, "--") {
		return Errorf(EINVALID, "slug %q must not contain \"--\"", s)
	}
	if reserved[s] {
		return Errorf(EINVALID, "slug %q is reserved", s)
	}
	return nil
}

// DatabaseName returns the Postgres database name of a tenant:
// "orchestra_" + slug with '-' replaced by '_'. slug must be valid.
func DatabaseName(slug string) string {
	return "orchestra_" + strings.ReplaceAll(slug, "-", "_")
}

// RoleName returns the Postgres role that owns a tenant's database; it is
// the same string as DatabaseName.
func RoleName(slug string) string { return DatabaseName(slug) }

// NormalizeDomain lowercases a custom domain and strips one trailing dot.
func NormalizeDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// ValidateDomain returns an EINVALID *Error unless d (already normalized) is a
// fully qualified host name of at least two labels, each a valid DNS label,
// at most 253 characters, with no port, no wildcard and not an IP address.
func ValidateDomain(d string) error {
	if d == "" || len(d) > 253 {
		return Errorf(EINVALID, "domain %q must be 1 to 253 characters long", d)
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return Errorf(EINVALID, "domain %q must have at least two labels", d)
	}
	allDigits := true
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return Errorf(EINVALID, "domain %q has an empty or over-long label", d)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			switch {
			case c >= 'a' && c <= 'z':
				allDigits = false
			case c >= '0' && c <= '9':
			case c == '-' && i > 0 && i < len(l)-1:
				allDigits = false
			default:
				return Errorf(EINVALID, "domain %q: label %q may only contain a-z, 0-9 and inner '-'", d, l)
			}
		}
	}
	if allDigits {
		return Errorf(EINVALID, "domain %q looks like an IP address", d)
	}
	return nil
}
