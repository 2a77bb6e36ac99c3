package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	for _, u := range []string{"ftp://ops:Secret@mgmt:21", "mgmt:15672", "http://", "http://ops:Secret@%zz",
		"http://ops:Secret@mgmt:15672/api?x=1", "http://mgmt:15672/prefix#f"} {
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

// fakeManagement is a management API serving one exchange bound to one
// group queue and a dead-letter layout, the queues listed by pages of
// pageSize (as RabbitMQ does with page and page_size); counts nil: absent.
func fakeManagement(t *testing.T, nQueues int, counts bool) *recorder {
	return newRecorder(t, func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var v any
		switch {
		case strings.HasPrefix(req.URL.Path, "/api/exchanges/"):
			v = []map[string]any{{"name": "orders", "type": "fanout"}, {"name": "DLQ", "type": "fanout"}}
		case strings.HasPrefix(req.URL.Path, "/api/bindings/"):
			v = []map[string]any{{"source": "orders", "destination": "g.orders", "destination_type": "queue"},
				{"source": "DLQ", "destination": "DLQ", "destination_type": "queue"}}
		case strings.HasPrefix(req.URL.Path, "/api/queues/"):
			var all []map[string]any
			for i := range nQueues {
				q := map[string]any{"name": "other" + strconv.Itoa(i)}
				switch i {
				case 0:
					q["name"] = "g.orders"
				case 1:
					q["name"] = "DLQ"
				}
				if counts {
					q["messages_ready"], q["messages_unacknowledged"] = 7, 2
				}
				all = append(all, q)
			}
			page, _ := strconv.Atoi(req.URL.Query().Get("page"))
			size, _ := strconv.Atoi(req.URL.Query().Get("page_size"))
			if page == 0 || size == 0 {
				v = all
				break
			}
			from, to := min((page-1)*size, len(all)), min(page*size, len(all))
			v = map[string]any{"items": all[from:to], "page": page, "page_count": (len(all) + size - 1) / size}
		default:
			http.NotFound(w, req)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	})
}

// TestManagementCounts: queues are read page by page (a vhost with more
// queues than one page holds); a queue the API gives no counts of
// (disable_metrics_collector, or not collected yet) has Lag, Pending and
// Messages -1, not 0.
func TestManagementCounts(t *testing.T) {
	for _, tt := range []struct {
		name    string
		queues  int
		counts  bool
		lag     int64
		pending int64
	}{
		{"paged", 2*mgmtPageSize + 3, true, 7, 2},
		{"no counts", 2, false, -1, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := fakeManagement(t, tt.queues, tt.counts)
			a, err := New("amqp://app:pw@127.0.0.1:5672/", WithManagementURL(api.srv.URL))
			if err != nil {
				t.Fatal(err)
			}
			topo, err := a.readTopology(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(topo.queues) != tt.queues {
				t.Fatalf("%d queues read, want %d", len(topo.queues), tt.queues)
			}
			api.mu.Lock()
			for _, req := range api.reqs {
				if strings.HasPrefix(req.URL.Path, "/api/queues/") {
					if n, _ := strconv.Atoi(req.URL.Query().Get("page_size")); n < 1 || n > 500 {
						t.Errorf("queues asked without pages of at most 500: %s", req.URL)
					}
				}
			}
			api.mu.Unlock()
			got := channelsOf(topo, "")
			if len(got) != 2 || got[0].Name != "DLQ" || got[0].Messages != tt.lag || got[1].Name != "orders" || len(got[1].Groups) != 1 ||
				got[1].Groups[0].Lag != tt.lag || got[1].Groups[0].Pending != tt.pending {
				t.Fatalf("channels %+v", got)
			}
		})
	}
}

// TestManagementErrorBodyNotRead: the body of an error answer is not read
// whole (a large one would be held in memory up to MaxManagementResponse).
func TestManagementErrorBodyNotRead(t *testing.T) {
	var wrote atomic.Int64
	api := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB at most
			n, err := w.Write(chunk)
			wrote.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	a, err := New("amqp://app:pw@127.0.0.1:5672/", WithManagementURL(api.srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.readTopology(context.Background()); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("an API failing: %v", err)
	}
	if n := wrote.Load(); n > 8<<20 {
		t.Fatalf("%d bytes of the error's body were taken", n)
	}
}
