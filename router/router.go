// Package router holds the edge router's domain types: the TLS modes and the
// CertSource seam through which the binary gets its certificates. The
// routing table lives in package route, the HTTP handler in proxy, the TLS
// modes internal and files in certs, ACME in acme, and the wiring in
// cmd/stagesub-router.
package router

import (
	"crypto/tls"
	"fmt"
	"net/http"
)

// TLSMode selects where the HTTPS listener's certificates come from.
type TLSMode string

const (
	// TLSInternal: a local CA made once and kept on disk issues certificates
	// for the base domain, its wildcard, admin, and registered custom domains.
	TLSInternal TLSMode = "internal"
	// TLSFiles: a certificate and key from files, reloaded on SIGHUP or change.
	TLSFiles TLSMode = "files"
	// TLSACME: certificates from an ACME CA (package acme), injected as a CertSource.
	TLSACME TLSMode = "acme"
	// TLSOff: plain HTTP only.
	TLSOff TLSMode = "off"
)

// ParseTLSMode returns the mode named s.
func ParseTLSMode(s string) (TLSMode, error) {
	switch m := TLSMode(s); m {
	case TLSInternal, TLSFiles, TLSACME, TLSOff:
		return m, nil
	}
	return "", fmt.Errorf("router: unknown TLS mode %q (want internal, files, acme or off)", s)
}

// CertSource provides the HTTPS listener's certificates. Implementations are
// safe for concurrent use.
type CertSource interface {
	// TLSConfig returns the listener's TLS configuration (GetCertificate and
	// NextProtos set). The router adds "h2" and "http/1.1" to NextProtos
	// when they are missing.
	TLSConfig() *tls.Config
	// HTTPHandler wraps the plain-HTTP listener's handler, e.g. to answer
	// ACME HTTP-01 challenges before next sees the request.
	HTTPHandler(next http.Handler) http.Handler
}
