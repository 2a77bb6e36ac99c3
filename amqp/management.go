package amqp

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// DefaultManagementPort is the port of the RabbitMQ management HTTP API
// the adapter assumes for an amqp:// URL (rabbitmq_management's default);
// DefaultManagementTLSPort the one for an amqps:// URL, over HTTPS.
const (
	DefaultManagementPort    = 15672
	DefaultManagementTLSPort = 15671
)

// MaxManagementResponse bounds one answer of the management API, in
// bytes: a larger one is an error, not decoded.
const MaxManagementResponse = 64 << 20

// WithManagementURL sets the RabbitMQ management HTTP API that Channels
// asks (http:// or https://, with a path prefix when the API has one). Its
// user and password, when given, replace those of the AMQP URL. Without
// it, the API is taken to be at http://<host>:15672 (https://<host>:15671
// for amqps://) of each AMQP URL in turn, with the AMQP URL's user and
// password (or those of a PLAIN authentication in WithConfig's SASL); a
// node whose management listener is on another port needs this option.
// The virtual host is always the AMQP connection's. The API is asked
// directly (HTTP_PROXY and HTTPS_PROXY are not used: a proxy would see
// the credentials) and a redirect is an error (it is not followed).
func WithManagementURL(u string) Option {
	return func(a *Adapter) error {
		if u == "" {
			a.mgmtURL = ""
			return nil
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.RawQuery != "" || p.ForceQuery || p.Fragment != "" {
			return fmt.Errorf("%w: amqp management URL %s: want http://host:port or https://host:port (with a path prefix, no query or fragment)",
				broker.ErrInvalidOption, broker.RedactURL(u))
		}
		a.mgmtURL = u
		return nil
	}
}

// errNoManagement is why Channels cannot list the channels.
var errNoManagement = fmt.Errorf("%w: listing channels needs the RabbitMQ management HTTP API: "+
	"enable the rabbitmq_management plugin (rabbitmq-plugins enable rabbitmq_management) "+
	"or set amqp.WithManagementURL to where it listens", broker.ErrUnsupported)

// mgmtEndpoint is one address of the management API: base has no user
// info (it appears in errors).
type mgmtEndpoint struct {
	base       *url.URL
	user, pass string
	vhost      string
}

// mgmtEndpoints are the addresses Channels tries, in order: the one
// WithManagementURL set, else one per AMQP URL.
func (a *Adapter) mgmtEndpoints() ([]mgmtEndpoint, error) {
	var out []mgmtEndpoint
	if a.external != nil {
		cfg := a.external.Config
		e := mgmtEndpoint{user: "guest", pass: "guest", vhost: cfg.Vhost}
		plainAuth(cfg.SASL, &e)
		scheme, port := "http", DefaultManagementPort
		host, _, err := net.SplitHostPort(a.external.RemoteAddr().String())
		if err != nil && a.mgmtURL == "" {
			return nil, fmt.Errorf("channels/amqp: %w", errNoManagement)
		}
		if cs := a.external.ConnectionState(); cs.HandshakeComplete {
			// The name the connection's certificate was verified for.
			scheme, port = "https", DefaultManagementTLSPort
			if cs.ServerName != "" {
				host = cs.ServerName
			}
		}
		e.base = &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
		out = append(out, e)
	}
	for _, raw := range a.urls {
		au, err := amqp091.ParseURI(raw)
		if err != nil {
			continue // refused by New already
		}
		e := mgmtEndpoint{user: au.Username, pass: au.Password, vhost: au.Vhost}
		if a.config.Vhost != "" {
			e.vhost = a.config.Vhost
		}
		plainAuth(a.config.SASL, &e)
		scheme, port := "http", DefaultManagementPort
		if au.Scheme == "amqps" {
			scheme, port = "https", DefaultManagementTLSPort
		}
		e.base = &url.URL{Scheme: scheme, Host: net.JoinHostPort(au.Host, strconv.Itoa(port))}
		out = append(out, e)
	}
	for i := range out {
		if out[i].vhost == "" {
			out[i].vhost = "/"
		}
	}
	if a.mgmtURL == "" {
		return out, nil
	}
	u, err := url.Parse(a.mgmtURL)
	if err != nil || len(out) == 0 {
		return nil, fmt.Errorf("%w: amqp management URL %s", broker.ErrInvalidOption, broker.RedactURL(a.mgmtURL))
	}
	e := out[0]
	if u.User != nil {
		e.user = u.User.Username()
		e.pass, _ = u.User.Password()
		u.User = nil
	}
	e.base = u
	return []mgmtEndpoint{e}, nil
}

// plainAuth takes the user and password of a PLAIN authentication among
// ms (the one amqp091 uses instead of the URL's).
func plainAuth(ms []amqp091.Authentication, e *mgmtEndpoint) {
	for _, m := range ms {
		if p, ok := m.(*amqp091.PlainAuth); ok {
			e.user, e.pass = p.Username, p.Password
			return
		}
	}
}

// mgmtClient asks the management API of one endpoint.
type mgmtClient struct {
	http *http.Client
	ep   mgmtEndpoint
}

// get decodes the JSON answer of GET path (below the API's base) into out.
// An API that does not answer, refuses the credentials (401, 403) or does
// not know the path (404: no management plugin behind that port) gives
// an error wrapping errNoManagement.
func (c *mgmtClient) get(ctx context.Context, path string, query url.Values, out any) error {
	// base has no query (WithManagementURL refuses one); path is escaped.
	where := strings.TrimSuffix(c.ep.base.String(), "/")
	target := where + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("channels/amqp: management API %s: %w", where, broker.Redacted(err))
	}
	req.SetBasicAuth(c.ep.user, c.ep.pass)
	req.Header.Set("Accept", "application/json")
	res, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("channels/amqp: management API %s: %w", where, ctx.Err())
		}
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			return &mgmtUnreachable{fmt.Errorf("channels/amqp: management API %s: its TLS certificate was not verified (%w): "+
				"set amqp.WithManagementURL to a name the certificate holds, or a TLS configuration that verifies it", where, broker.Redacted(err))}
		}
		return &mgmtUnreachable{fmt.Errorf("channels/amqp: management API %s did not answer (%w): %w", where, broker.Redacted(err), errNoManagement)}
	}
	defer res.Body.Close()
	var body []byte
	if res.StatusCode == http.StatusOK {
		body, err = io.ReadAll(io.LimitReader(res.Body, MaxManagementResponse+1))
	} else {
		// An error's body is not read (nor kept): the status says enough.
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4096))
	}
	switch {
	case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden:
		return fmt.Errorf("channels/amqp: management API %s refused user %q (%s: a wrong password, or a user without the management or monitoring tag): %w",
			where, c.ep.user, res.Status, errNoManagement)
	case res.StatusCode == http.StatusNotFound:
		return fmt.Errorf("channels/amqp: management API %s: %s for %s: %w", where, res.Status, path, errNoManagement)
	case res.StatusCode >= 300 && res.StatusCode < 400:
		return fmt.Errorf("channels/amqp: management API %s: %s for %s: redirects are not followed (the credentials would go along): set amqp.WithManagementURL to the API's address", where, res.Status, path)
	case res.StatusCode != http.StatusOK:
		return fmt.Errorf("channels/amqp: management API %s: %s for %s", where, res.Status, path)
	case err != nil:
		return fmt.Errorf("channels/amqp: management API %s: reading %s: %w", where, path, broker.Redacted(err))
	case len(body) > MaxManagementResponse:
		return fmt.Errorf("channels/amqp: management API %s: the answer to %s is larger than %d bytes", where, path, MaxManagementResponse)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("channels/amqp: management API %s: decoding %s: %w", where, path, err)
	}
	return nil
}

// mgmtUnreachable is a management API that did not answer: the next
// endpoint is tried.
type mgmtUnreachable struct{ err error }

func (e *mgmtUnreachable) Error() string { return e.err.Error() }
func (e *mgmtUnreachable) Unwrap() error { return e.err }

type mgmtExchange struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// mgmtQueue is a queue as the management API lists it; a count is absent
// (nil) when the API has no statistics of it yet, or none at all
// (management_agent.disable_metrics_collector).
type mgmtQueue struct {
	Name                   string `json:"name"`
	MessagesReady          *int64 `json:"messages_ready"`
	MessagesUnacknowledged *int64 `json:"messages_unacknowledged"`
}

// count is *n, or -1 when absent.
func count(n *int64) int64 {
	if n == nil {
		return -1
	}
	return *n
}

// mgmtPage is one page of a paginated listing of the management API.
type mgmtPage[T any] struct {
	Items     []T `json:"items"`
	PageCount int `json:"page_count"`
}

// mgmtPageSize is the page size of the listings of queues (the API takes
// at most 500).
const mgmtPageSize = 500

// getPaged reads every page of the listing at path (page, page_size).
func getPaged[T any](ctx context.Context, c *mgmtClient, path string, query url.Values) ([]T, error) {
	var out []T
	for page := 1; ; page++ {
		q := url.Values{"page": {strconv.Itoa(page)}, "page_size": {strconv.Itoa(mgmtPageSize)}}
		for k, v := range query {
			q[k] = v
		}
		var p mgmtPage[T]
		if err := c.get(ctx, path, q, &p); err != nil {
			return nil, err
		}
		out = append(out, p.Items...)
		if page >= p.PageCount || len(p.Items) == 0 {
			return out, nil
		}
	}
}

type mgmtBinding struct {
	Source          string `json:"source"`
	Destination     string `json:"destination"`
	DestinationType string `json:"destination_type"`
}

// mgmtTopology is what the management API tells of a virtual host.
type mgmtTopology struct {
	exchanges []mgmtExchange
	queues    []mgmtQueue
	bindings  []mgmtBinding
}

// mgmtHTTPClient is the HTTP client of the management API. It sends the
// credentials to the API's address alone: through no proxy (a proxy named
// by HTTP_PROXY or HTTPS_PROXY would see the Basic authentication, in the
// clear over http://), and it follows no redirect (Go sends the
// Authorization header again to the same host on another port or scheme,
// https to http included): a redirect is an error.
func (a *Adapter) mgmtHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	cfg := a.config.TLSClientConfig
	if cfg == nil && a.external != nil {
		cfg = a.external.Config.TLSClientConfig // that of a given connection
	}
	if cfg != nil {
		tr.TLSClientConfig = cfg.Clone()
	}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// readTopology reads the exchanges, queues and bindings of the
// connection's virtual host from the first endpoint that answers.
func (a *Adapter) readTopology(ctx context.Context) (*mgmtTopology, error) {
	eps, err := a.mgmtEndpoints()
	if err != nil {
		return nil, err
	}
	hc := a.mgmtHTTPClient()
	defer hc.CloseIdleConnections()
	var errs []error
	for _, ep := range eps {
		c := &mgmtClient{http: hc, ep: ep}
		v := url.PathEscape(ep.vhost)
		t := &mgmtTopology{}
		err := c.get(ctx, "/api/exchanges/"+v, url.Values{"columns": {"name,type"}}, &t.exchanges)
		if err == nil {
			t.queues, err = getPaged[mgmtQueue](ctx, c, "/api/queues/"+v, url.Values{"columns": {"name,messages_ready,messages_unacknowledged"}})
		}
		if err == nil {
			err = c.get(ctx, "/api/bindings/"+v, url.Values{"columns": {"source,destination,destination_type"}}, &t.bindings)
		}
		if err == nil {
			return t, nil
		}
		errs = append(errs, err)
		var unreachable *mgmtUnreachable
		if !errors.As(err, &unreachable) {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("channels/amqp: %w", errNoManagement)
	}
	return nil, errors.Join(errs...)
}

// Channels lists the channels of the connection's virtual host whose name
// starts with prefix, from the RabbitMQ management HTTP API (AMQP 0-9-1
// cannot list exchanges or queues; see WithManagementURL): every exchange
// but the default one and the amq.* ones is a channel, with Messages -1
// (RabbitMQ stores messages per group queue), and its groups are the
// queues named "<group>.<channel>" bound to it, each with Lag = the
// queue's messages_ready and Pending = its messages_unacknowledged (-1
// when the API has no count of the queue: not collected yet, or
// management_agent.disable_metrics_collector). A
// channel whose exchange is bound to a queue of its own name (a
// dead-letter queue, whose fanout exchange is named like it) has Messages
// = that queue's messages_ready. The management API refreshes its counts
// every few seconds (collect_statistics_interval, 5 s by default). An API
// that does not answer, or refuses the request (401, 403, 404), gives an
// error wrapping broker.ErrUnsupported that says how to enable it.
func (a *Adapter) Channels(ctx context.Context, prefix string) ([]broker.ChannelInfo, error) {
	if _, err := a.liveOrErr(); err != nil {
		return nil, err
	}
	ctx, cancel := opCtxIfNone(ctx)
	defer cancel()
	t, err := a.readTopology(ctx)
	if err != nil {
		return nil, err
	}
	return channelsOf(t, prefix), nil
}

// channelsOf lists the channels of t whose name starts with prefix (see
// Channels).
func channelsOf(t *mgmtTopology, prefix string) []broker.ChannelInfo {
	queues := make(map[string]*mgmtQueue, len(t.queues))
	for i := range t.queues {
		queues[t.queues[i].Name] = &t.queues[i]
	}
	byName := map[string]int{}
	var out []broker.ChannelInfo
	for _, x := range t.exchanges {
		if _, dup := byName[x.Name]; dup || x.Name == "" || strings.HasPrefix(x.Name, "amq.") || !strings.HasPrefix(x.Name, prefix) {
			continue
		}
		byName[x.Name] = len(out)
		out = append(out, broker.ChannelInfo{Name: x.Name, Messages: -1})
	}
	for _, b := range t.bindings {
		i, ok := byName[b.Source]
		if !ok || b.DestinationType != "queue" {
			continue
		}
		info := &out[i]
		q := queues[b.Destination]
		if q == nil {
			continue // deleted meanwhile
		}
		if b.Destination == b.Source {
			info.Messages = count(q.MessagesReady)
			continue
		}
		group, ok := strings.CutSuffix(b.Destination, "."+b.Source)
		if !ok || group == "" || slices.ContainsFunc(info.Groups, func(g broker.GroupInfo) bool { return g.Name == group }) {
			continue
		}
		info.Groups = append(info.Groups, broker.GroupInfo{Name: group,
			GroupLag: broker.GroupLag{Lag: count(q.MessagesReady), Pending: count(q.MessagesUnacknowledged)}})
	}
	for i := range out {
		slices.SortFunc(out[i].Groups, func(x, y broker.GroupInfo) int { return strings.Compare(x.Name, y.Name) })
	}
	slices.SortFunc(out, func(x, y broker.ChannelInfo) int { return strings.Compare(x.Name, y.Name) })
	return out
}
