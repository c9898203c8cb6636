package redislock

import "github.com/redis/go-redis/v9"

// The three Lua scripts run atomically on the server. Their keys are the
// lock key (KEYS[1]) and, for acquire, the fence counter (KEYS[2]).
//
// The value of a held lock is one JSON object, assembled by acquire:
//
//	{"token":"<32 hex digits>","fence":<integer>,"holder":<ProcessLock JSON>}
//
// renew compares the whole value and release its token, so they only ever
// touch the holding that wrote it.

// acquireScript takes the lock if the key is absent. ARGV: token, holder
// JSON, TTL in milliseconds. It returns {1, value, ttl} to the winner and
// {0, current value, PTTL} to a loser.
//
// The fencing token is max(last token + 1, server time in microseconds):
// it grows by one at least with every new holder while the counter key
// lives, and, as the server time keeps growing, it still grows after a
// restart that lost the counter. Lua numbers are doubles: integers are
// exact below 2^53, which microseconds since 1970 stay under until the
// year 2255. string.format('%.0f') prints them without an exponent.
var acquireScript = redis.NewScript(`
local current = redis.call('GET', KEYS[1])
if current then
	return {0, current, redis.call('PTTL', KEYS[1])}
end
local t = redis.call('TIME')
local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if last + 1 > fence then
	fence = last + 1
end
local digits = string.format('%.0f', fence)
redis.call('SET', KEYS[2], digits)
local value = '{"token":"' .. ARGV[1] .. '","fence":' .. digits .. ',"holder":' .. ARGV[2] .. '}'
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return {1, value, tonumber(ARGV[3])}
`)

// renewScript extends the TTL (ARGV[2], milliseconds) of the key if it
// still holds the value ARGV[1]. It returns 1 if it did, 0 if the key is
// gone or holds another value.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes the key if its value begins with ARGV[1], the
// '{"token":"…"' of one holding (a release may follow an acquisition whose
// reply was lost, so the whole value is not always known), and then
// publishes "released" on the channel ARGV[2], where waiters listen (with
// pcall: a user whose ACL does not allow the channel still releases; the
// waiters then find the free key by polling). It returns 1 if it did, 0
// otherwise.
var releaseScript = redis.NewScript(`
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(ARGV[1])) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	redis.pcall('PUBLISH', ARGV[2], 'released')
	return 1
end
return 0
`)
