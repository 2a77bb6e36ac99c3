// Package hooks is the interceptor pipeline of channels: the Go form of the
// localChannel and sendToChannel middleware hooks of @moleculer/channels.
//
// A ChannelInterceptor wraps every channel handler; a SendInterceptor wraps
// SendToChannel; a SendBatchInterceptor wraps SendBatch (it sees every item
// of the batch and returns nil or one error per item). They are composed once,
// when the plugin starts, in registration order: the first registered is
// the outermost, so it sees a delivery first and its result last. Nothing
// is looked up per message. A batch goes through the interceptors as one
// batch only when every interceptor with a SendToChannel hook also has a
// SendBatch hook ([BatchCapable]); otherwise each of its messages goes
// through the SendToChannel hooks on its own.
//
// Built-ins: [Recover] turns panics into *broker.PanicError, [Logging] logs
// each delivery, send and batch send, [Timeout] bounds each delivery with a
// deadline.
package hooks
