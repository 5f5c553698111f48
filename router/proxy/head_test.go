package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestWriteHead compares writeHead with (*http.Request).Write: for the
// requests it covers, the same lines (in any order); for the others, false
// and nothing written.
func TestWriteHead(t *testing.T) {
	req := func(method, target, host string, hdr http.Header) *http.Request {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatal(err)
		}
		if hdr == nil {
			hdr = http.Header{}
		}
		if _, ok := hdr["User-Agent"]; !ok {
			hdr["User-Agent"] = []string{""}
		}
		return &http.Request{Method: method, URL: u, Host: host, Header: hdr}
	}
	covered := []struct {
		name string
		r    *http.Request
	}{
		{"Plain", req("GET", "/", "goteborg.stagesub.test", nil)},
		{"Head", req("HEAD", "/x", "goteborg.stagesub.test:8080", nil)},
		{"Query", req("GET", "/p/q?a=1&b=%20", "goteborg.stagesub.test", nil)},
		{"ForceQuery", req("GET", "/p?", "goteborg.stagesub.test", nil)},
		{"EscapedPath", req("GET", "/a%2Fb/%C3%A5?x", "goteborg.stagesub.test", nil)},
		{"Star", req("GET", "/*", "goteborg.stagesub.test", nil)},
		{"IPv6Host", req("GET", "/", "[::1]:8080", nil)},
		{"UserAgent", req("GET", "/", "h.test", http.Header{"User-Agent": {" orchestra-app/2 "}})},
		{"BlankUserAgent", req("GET", "/", "h.test", http.Header{"User-Agent": {"  "}})},
		{"Headers", req("GET", "/", "h.test", http.Header{
			"Accept":          {"text/html", "application/json"},
			"X-Forwarded-For": {"6.6.6.6, 127.0.0.1"},
			"Cookie":          {"a=1; b=2"},
			"X-Empty":         {""},
			"X-Newline":       {"one\r\ntwo\nthree"},
			"X-Spaces":        {"  padded\t"},
			"Bad Name":        {"dropped"},
			"Content-Length":  {"12"},
			"Trailer":         {"X-T"},
			"Host":            {"other.test"},
		})},
	}
	for _, tt := range covered {
		t.Run(tt.name, func(t *testing.T) {
			var got, want bytes.Buffer
			gw := bufio.NewWriter(&got)
			if !writeHead(gw, tt.r) {
				t.Fatal("writeHead refused a request it covers")
			}
			_ = gw.Flush()
			if err := tt.r.Write(&want); err != nil {
				t.Fatal(err)
			}
			if g, w := headLines(got.String()), headLines(want.String()); !slices.Equal(g, w) {
				t.Errorf("lines\n got %q\nwant %q", g, w)
			}
			if !strings.HasSuffix(got.String(), "\r\n\r\n") {
				t.Errorf("head does not end with an empty line: %q", got.String())
			}
		})
	}

	chunked := req("GET", "/", "h.test", nil)
	chunked.TransferEncoding = []string{"chunked"}
	closing := req("GET", "/", "h.test", nil)
	closing.Close = true
	trailer := req("GET", "/", "h.test", nil)
	trailer.Trailer = http.Header{"X-T": nil}
	withBody := req("GET", "/", "h.test", nil)
	withBody.Body = bodyOf("x")
	noUA := req("GET", "/", "h.test", nil)
	delete(noUA.Header, "User-Agent")
	opaque := req("GET", "/", "h.test", nil)
	opaque.URL.Opaque = "//h.test/x"
	ctl := req("GET", "/", "h.test", nil)
	ctl.URL.RawQuery = "a=\x01"
	for _, tt := range []struct {
		name string
		r    *http.Request
	}{
		{"Post", req("POST", "/", "h.test", nil)},
		{"Delete", req("DELETE", "/", "h.test", nil)},
		{"Chunked", chunked},
		{"Close", closing},
		{"Trailer", trailer},
		{"Body", withBody},
		{"NoUserAgentKey", noUA},
		{"Opaque", opaque},
		{"ControlByte", ctl},
		{"UnicodeHost", req("GET", "/", "göteborg.test", nil)},
		{"IPv6Zone", req("GET", "/", "[fe80::1%25eth0]:80", nil)},
		{"InvalidHost", req("GET", "/", "h.test\r\nX: y", nil)},
	} {
		t.Run("Refused/"+tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := bufio.NewWriter(&buf)
			if writeHead(w, tt.r) {
				t.Fatal("writeHead wrote a request it does not cover")
			}
			if got := w.Buffered() + buf.Len(); got != 0 {
				t.Errorf("refused, but wrote %d bytes", got)
			}
		})
	}
}

// headLines returns the request line, then the sorted header lines of a
// request head.
func headLines(head string) []string {
	lines := strings.Split(strings.TrimSuffix(head, "\r\n\r\n"), "\r\n")
	slices.Sort(lines[1:])
	return lines
}

func bodyOf(s string) *bodyErrReader {
	return &bodyErrReader{rc: readCloser{strings.NewReader(s)}}
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

func BenchmarkWriteHead(b *testing.B) {
	r := &http.Request{Method: "GET", Host: "goteborg.stagesub.test", URL: &url.URL{Path: "/projects", RawQuery: "page=2"},
		Header: http.Header{
			"User-Agent": {""}, "Accept": {"*/*"}, "X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"},
			"X-Forwarded-Host": {"goteborg.stagesub.test"}, "X-Request-Id": {"0123456789abcdef0123456789abcdef"},
			"X-Stagesub-Tenant": {"goteborg"},
		}}
	w := bufio.NewWriterSize(discard{}, 4096)
	b.Run("writeHead", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			writeHead(w, r)
			_ = w.Flush()
		}
	})
	b.Run("RequestWrite", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.Write(w)
			_ = w.Flush()
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
