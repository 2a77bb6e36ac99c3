package amqp

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// TestManagementEndpoints: where Channels looks for the management API
// and with which credentials and virtual host.
func TestManagementEndpoints(t *testing.T) {
	type ep struct{ base, user, pass, vhost string }
	tests := []struct {
		name string
		url  string
		opts []Option
		want []ep
	}{
		{name: "default", url: "amqp://app:pw@rabbit:5672/", want: []ep{{"http://rabbit:15672", "app", "pw", "/"}}},
		{name: "guest", url: "amqp://localhost", want: []ep{{"http://localhost:15672", "guest", "guest", "/"}}},
		{name: "vhost", url: "amqp://app:pw@rabbit:5673/prod", want: []ep{{"http://rabbit:15672", "app", "pw", "prod"}}},
		{name: "tls", url: "amqps://app:pw@rabbit/", want: []ep{{"https://rabbit:15671", "app", "pw", "/"}}},
		{name: "failover", url: "amqp://a:1@r1/; amqp://b:2@r2/v",
			want: []ep{{"http://r1:15672", "a", "1", "/"}, {"http://r2:15672", "b", "2", "v"}}},
		{name: "config", url: "amqp://app:pw@rabbit/",
			opts: []Option{WithConfig(amqp091.Config{Vhost: "cfg", SASL: []amqp091.Authentication{&amqp091.PlainAuth{Username: "s", Password: "t"}}})},
			want: []ep{{"http://rabbit:15672", "s", "t", "cfg"}}},
		{name: "management URL", url: "amqp://app:pw@rabbit:5674/v", opts: []Option{WithManagementURL("http://mgmt:15674/prefix")},
			want: []ep{{"http://mgmt:15674/prefix", "app", "pw", "v"}}},
		{name: "management URL with user", url: "amqp://app:pw@rabbit/", opts: []Option{WithManagementURL("https://ops:x%2Fy@mgmt:443")},
			want: []ep{{"https://mgmt:443", "ops", "x/y", "/"}}},
		{name: "management URL reset", url: "amqp://app:pw@rabbit/", opts: []Option{WithManagementURL("http://mgmt:1"), WithManagementURL("")},
			want: []ep{{"http://rabbit:15672", "app", "pw", "/"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.url, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			eps, err := a.mgmtEndpoints()
			if err != nil {
				t.Fatal(err)
			}
			var got []ep
			for _, e := range eps {
				if e.base.User != nil {
					t.Errorf("%s keeps its user info", e.base)
				}
				got = append(got, ep{e.base.String(), e.user, e.pass, e.vhost})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("got %+v, want %+v", got[i], tt.want[i])
				}
			}
		})
	}
}

func TestWithManagementURLRefused(t *testing.T) {
	for _, u := range []string{"ftp://ops:Secret@mgmt:21", "mgmt:15672", "http://", "http://ops:Secret@%zz"} {
		_, err := New(DefaultURL, WithManagementURL(u))
		if !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%q: %v, want ErrInvalidOption", u, err)
		}
		if err != nil && strings.Contains(err.Error(), "Secret") {
			t.Errorf("%q: %q shows the password", u, err)
		}
	}
}

// recorder is a test HTTP server that records the requests it gets.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
	srv  *httptest.Server
}

func newRecorder(t *testing.T, h http.HandlerFunc) *recorder {
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Clone(context.Background()))
		r.mu.Unlock()
		h(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) authorized() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, req := range r.reqs {
		if req.Header.Get("Authorization") != "" {
			n++
		}
	}
	return n
}

// TestManagementRedirectNotFollowed: a management API that redirects
// (to another port of the same host) does not get the credentials sent
// there: the redirect is an error.
func TestManagementRedirectNotFollowed(t *testing.T) {
	other := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("[]")) })
	api := newRecorder(t, func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, other.srv.URL+req.URL.RequestURI(), http.StatusFound)
	})
	a, err := New("amqp://app:Secret@127.0.0.1:5672/", WithManagementURL(api.srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.readTopology(context.Background())
	if err == nil || !strings.Contains(err.Error(), "302") {
		t.Fatalf("a redirecting API: %v, want an error", err)
	}
	if n := other.authorized(); n != 0 {
		t.Fatalf("the redirect target got the credentials %d times", n)
	}
	if api.authorized() != 1 {
		t.Fatal("the API was not asked")
	}
}

// TestManagementNoProxy: HTTP_PROXY does not apply to the management API
// (the proxy would see the Basic authentication).
func TestManagementNoProxy(t *testing.T) {
	proxy := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("[]")) })
	t.Setenv("HTTP_PROXY", proxy.srv.URL)
	t.Setenv("http_proxy", proxy.srv.URL)
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	a, err := New("amqp://app:Secret@mgmt.invalid:5672/")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = a.readTopology(ctx) // mgmt.invalid does not resolve
	if n := proxy.authorized(); n != 0 {
		t.Fatalf("the proxy got the credentials %d times", n)
	}
}
