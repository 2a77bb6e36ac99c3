package channels

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"go-micro.dev/v4/metadata"

	"github.com/microchannels/channels/broker"
)

// CallInfo describes the delivery a handler runs for. Handlers (and the
// interceptors around them) read it with FromContext; sending with that ctx
// propagates it to the next service.
type CallInfo struct {
	// ID identifies this handler invocation; children see it as ParentID.
	ID string
	// RequestID is shared by a whole chain of messages.
	RequestID string
	// ParentID is the ID of the invocation that sent this message, if any.
	ParentID string
	// Service is the full name of the service running the handler.
	Service string
	// Channel is the full channel name; ParentChannel is the channel of the
	// handler that sent the message, if it was sent from one.
	Channel       string
	ParentChannel string
	// Caller is the full name of the service that sent the message.
	Caller string
	// Group is the consumer group.
	Group string
	// Level is 1 for a message sent from outside any handler, parent + 1 after.
	Level int
	// Meta is the moleculer ctx.meta carried by the message, with its
	// original keys and types. go-micro metadata in the same ctx holds the
	// same entries as strings.
	Meta map[string]any
}

type callInfoKey struct{}
type metaKey struct{}

// FromContext returns the CallInfo of the handler invocation running with ctx.
func FromContext(ctx context.Context) (*CallInfo, bool) {
	ci, ok := ctx.Value(callInfoKey{}).(*CallInfo)
	return ci, ok
}

// WithMeta attaches meta that SendToChannel carries as moleculer's $meta,
// with keys and value types kept exactly. go-micro metadata is carried too,
// as strings and under go-micro's title-cased keys, except for the entries
// that came from the received $meta, which keep the sender's keys and types
// unless their value was changed (see the README, Interoperability).
//
// The keys of the metadata policy (DefaultMetaDenied, WithMetaAllow,
// WithMetaDeny, WithMetaPropagation) filter the go-micro metadata and the
// received $meta a send carries on; WithMeta entries are sent as given,
// since the code chose to send them (a consumer still drops the denied
// ones, unless its own policy allows them).
func WithMeta(ctx context.Context, meta map[string]any) context.Context {
	merged := map[string]any{}
	if prev, ok := ctx.Value(metaKey{}).(map[string]any); ok {
		for k, v := range prev {
			merged[k] = v
		}
	}
	for k, v := range meta {
		merged[k] = v
	}
	return context.WithValue(ctx, metaKey{}, merged)
}

// outgoingHeaders builds the headers of a send: a copy of the user headers
// plus the context headers of ctx.
func (p *Plugin) outgoingHeaders(ctx context.Context, user map[string]string) (map[string]string, error) {
	sc, err := p.sendContext(ctx)
	if err != nil {
		return nil, err
	}
	return sc.headers(p, user), nil
}

// sendContext is what the context headers of a send take from its ctx,
// worked out once for all the messages of a batch.
type sendContext struct {
	// set: ctx is a handler's, or carries go-micro metadata or WithMeta.
	set bool
	// ctx are the context headers; outside a handler $requestID is not
	// among them, since every message gets one of its own.
	ctx map[string]string
	// fresh: outside a handler (a new $requestID per message).
	fresh bool
}

func (p *Plugin) sendContext(ctx context.Context) (sendContext, error) {
	ci, inHandler := FromContext(ctx)
	md, hasMD := metadata.FromContext(ctx)
	own, hasOwn := ctx.Value(metaKey{}).(map[string]any)
	if !inHandler && !hasMD && !hasOwn {
		return sendContext{}, nil
	}
	sc := sendContext{set: true, ctx: make(map[string]string, 6), fresh: !inHandler}
	h := sc.ctx
	if inHandler {
		h[broker.HeaderRequestID] = ci.RequestID
		h[broker.HeaderParentID] = ci.ID
		h[broker.HeaderCaller] = ci.Service
		h[broker.HeaderParentChannelName] = ci.Channel
		h[broker.HeaderLevel] = strconv.Itoa(ci.Level)
	} else {
		h[broker.HeaderLevel] = "0"
	}
	var meta map[string]any
	if pol := &p.o.meta; pol.off {
		meta, md = nil, nil // WithMeta entries only
	} else {
		if inHandler {
			meta = ci.Meta // filtered when it was received
		}
		md = pol.filterMD(md)
	}
	meta = mergeMeta(meta, md, own)
	if len(meta) > 0 {
		b, err := p.o.serializer.Marshal(meta)
		if err != nil {
			return sendContext{}, fmt.Errorf("serialize $meta: %w", err)
		}
		enc := base64.StdEncoding.EncodeToString(b)
		if len(enc) > p.o.maxMetaSize {
			return sendContext{}, fmt.Errorf("%w: $meta of %d bytes (base64), more than MaxMetaSize (%d): consumers would refuse it",
				broker.ErrTooLarge, len(enc), p.o.maxMetaSize)
		}
		h[broker.HeaderMeta] = enc
	}
	return sc, nil
}

// headers returns the headers of one message: a copy of the user headers,
// then the context headers over them.
func (sc sendContext) headers(p *Plugin, user map[string]string) map[string]string {
	if !sc.set {
		if len(user) == 0 {
			return nil
		}
		return broker.CloneHeaders(user, 0)
	}
	h := broker.CloneHeaders(user, len(sc.ctx)+1)
	for k, v := range sc.ctx {
		h[k] = v
	}
	if sc.fresh {
		h[broker.HeaderRequestID] = p.newID()
	}
	return h
}

// mergeMeta builds the $meta of a send from the $meta the handler received
// (in, with the sender's keys and JSON types), the go-micro metadata of the
// ctx (md, whose keys go-micro's FromContext title-cases) and WithMeta
// entries (own):
//   - a metadata entry whose key is the title-cased form of an incoming key
//     is that entry seen through go-micro: it changes nothing when its value
//     is the incoming value as a string, else it replaces the value (as a
//     string) under the incoming key's spelling;
//   - any other metadata entry is added under go-micro's key, as a string;
//   - WithMeta entries are set last, with their keys and types.
func mergeMeta(in map[string]any, md metadata.Metadata, own map[string]any) map[string]any {
	meta := make(map[string]any, len(in)+len(md)+len(own))
	for k, v := range in {
		meta[k] = v
	}
	if len(md) > 0 {
		titled := make(map[string][]string, len(in))
		for k := range in {
			t := titleKey(k)
			titled[t] = append(titled[t], k)
		}
	next:
		for k, v := range md {
			origs := titled[k]
			for _, o := range origs {
				if metaString(in[o]) == v {
					continue next
				}
			}
			if len(origs) > 0 {
				meta[origs[0]] = v
				continue
			}
			meta[k] = v
		}
	}
	for k, v := range own {
		meta[k] = v
	}
	return meta
}

// titleKey is the key go-micro's metadata.FromContext gives for k.
func titleKey(k string) string {
	return strings.Title(k) //nolint:staticcheck // must match go-micro's metadata package exactly
}

// newID returns a request or invocation id: a random (version 4) UUID, as
// moleculer's context ids, so ids never repeat across restarts of a node.
func (p *Plugin) newID() string { return idRand.uuid().String() }

// idRand is crypto/rand read ahead for 64 ids at a time (as
// uuid.EnableRandPool, without changing the uuid package's global state).
var idRand = &randPool{r: bufio.NewReaderSize(rand.Reader, 64*16)}

type randPool struct {
	mu sync.Mutex
	r  *bufio.Reader
}

// uuid returns a version 4 UUID. The bytes are copied out of the buffer
// (Peek), so the UUID stays on the caller's stack.
func (p *randPool) uuid() (u uuid.UUID) {
	p.mu.Lock()
	b, err := p.r.Peek(len(u))
	if err != nil { // crypto/rand does not fail (it crashes the program instead)
		p.mu.Unlock()
		return uuid.New()
	}
	copy(u[:], b)
	_, _ = p.r.Discard(len(u))
	p.mu.Unlock()
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return u
}

// contextWrapper is the outermost handler: it turns the context headers of
// the message into a CallInfo and go-micro metadata. Headers that do not
// decode make the message poison.
//
// It is also where a handler's error leaves the user's code: its text, and
// the stack of a panic (recovered here), have their credentials hidden
// (redactHandlerErr) before the kit writes them into dead-letter headers
// and failure records.
func (p *Plugin) contextWrapper(r *resolved, next broker.Handler) broker.Handler {
	return func(ctx context.Context, msg *broker.Message) (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = redactHandlerErr(broker.NewPanicError(v))
			}
		}()
		if len(msg.Payload) > p.o.maxPayloadSize {
			return &broker.DecodeError{Channel: msg.Channel, MsgID: msg.ID, Field: "payload",
				Err: fmt.Errorf("%w: payload of %d bytes, more than MaxPayloadSize (%d)", broker.ErrTooLarge, len(msg.Payload), p.o.maxPayloadSize)}
		}
		hc := &handlerContext{ci: CallInfo{ID: p.newID(), Service: r.service, Channel: r.ch.Name, Group: r.ch.Group, Level: 1}}
		ci := &hc.ci
		if h := msg.Headers; len(h) > 0 {
			ci.RequestID = h[broker.HeaderRequestID]
			ci.ParentID = h[broker.HeaderParentID]
			ci.Caller = h[broker.HeaderCaller]
			ci.ParentChannel = h[broker.HeaderParentChannelName]
			if s, ok := h[broker.HeaderLevel]; ok {
				if lv, err := strconv.Atoi(s); err == nil {
					// A producer's number: clamped, so that a negative or
					// huge $level cannot wrap around.
					ci.Level = min(max(lv, 0), maxLevel) + 1
				}
			}
			if enc, ok := h[broker.HeaderMeta]; ok && enc != "" {
				if len(enc) > p.o.maxMetaSize {
					return &broker.DecodeError{Channel: msg.Channel, MsgID: msg.ID, Field: broker.HeaderMeta,
						Err: fmt.Errorf("%w: $meta of %d bytes, more than MaxMetaSize (%d)", broker.ErrTooLarge, len(enc), p.o.maxMetaSize)}
				}
				meta, err := p.decodeMeta(enc)
				if err != nil {
					return &broker.DecodeError{Channel: msg.Channel, MsgID: msg.ID, Field: broker.HeaderMeta, Err: err}
				}
				pol := &p.o.meta
				pol.filter(meta)
				ci.Meta = meta
				if !pol.off && len(meta) > 0 {
					md := make(metadata.Metadata, len(meta))
					for k, v := range meta {
						md[k] = metaString(v)
					}
					ctx = metadata.NewContext(ctx, md)
				}
			}
		}
		if ci.RequestID == "" {
			ci.RequestID = ci.ID
		}
		hc.Context = ctx
		if err := next(hc, msg); err != nil {
			return redactHandlerErr(err)
		}
		return nil
	}
}

// handlerContext is the context a handler runs with: its parent with the
// CallInfo attached, as context.WithValue(parent, callInfoKey{}, &ci) would
// give, in one allocation with the CallInfo.
type handlerContext struct {
	context.Context
	ci CallInfo
}

// Value returns the CallInfo for callInfoKey, and asks the parent for any
// other key.
func (c *handlerContext) Value(key any) any {
	if _, ok := key.(callInfoKey); ok {
		return &c.ci
	}
	return c.Context.Value(key)
}

func (c *handlerContext) String() string {
	return fmt.Sprintf("%v.WithValue(channels.callInfoKey, %s)", c.Context, c.ci.ID)
}

func (p *Plugin) decodeMeta(enc string) (map[string]any, error) {
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, err
	}
	return broker.UnmarshalMap(p.o.serializer, b, MaxMetaEntries)
}

// maxLevel is the largest received $level taken as is.
const maxLevel = 1<<31 - 2

// DefaultMetaDenied returns the keys that, by default, cross a channel in
// neither direction, matched case-insensitively ("Micro-*" is a prefix):
// go-micro's Authorization (a bearer token its RPC client would forward,
// and its auth wrapper would not replace), its Micro-* headers (the
// calling service, namespace, ...), Remote and Local (addresses), Timeout,
// Content-Type and Accept (which change how go-micro calls are encoded).
// A received $meta loses them before the handler sees it; a send does not
// take them from the go-micro metadata or the received $meta of its ctx.
func DefaultMetaDenied() []string {
	return []string{"Authorization", "Micro-*", "Remote", "Local", "Timeout", "Content-Type", "Accept"}
}

// metaPolicy is which $meta and go-micro metadata keys cross a channel.
type metaPolicy struct {
	off   bool     // WithMetaPropagation(false)
	deny  []string // DefaultMetaDenied, then WithMetaDeny
	allow []string // WithMetaAllow: let through despite deny
}

// passes reports whether key crosses.
func (m *metaPolicy) passes(key string) bool {
	for _, p := range m.allow {
		if metaKeyMatch(p, key) {
			return true
		}
	}
	for _, p := range m.deny {
		if metaKeyMatch(p, key) {
			return false
		}
	}
	return true
}

// metaKeyMatch matches a key against a pattern: the same key whatever its
// case, or, for a pattern ending in "*", a key that starts with the rest.
func metaKeyMatch(pattern, key string) bool {
	if pre, ok := strings.CutSuffix(pattern, "*"); ok {
		return len(key) >= len(pre) && strings.EqualFold(key[:len(pre)], pre)
	}
	return strings.EqualFold(pattern, key)
}

// filter deletes the keys of a received $meta that do not cross.
func (m *metaPolicy) filter(meta map[string]any) {
	for k := range meta {
		if !m.passes(k) {
			delete(meta, k)
		}
	}
}

// filterMD returns the go-micro metadata of a send without the keys that
// do not cross (md itself when all do).
func (m *metaPolicy) filterMD(md metadata.Metadata) metadata.Metadata {
	for k := range md {
		if !m.passes(k) {
			out := make(metadata.Metadata, len(md))
			for k, v := range md {
				if m.passes(k) {
					out[k] = v
				}
			}
			return out
		}
	}
	return md
}

func metaString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
