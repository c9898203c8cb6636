package instancelock

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseStatStart(t *testing.T) {
	_, err := parseStatStart([]byte("1 (a) b) S 1 2 3"))
	assert.Error(t, err)
	_, err = parseStatStart([]byte("no paren"))
	assert.Error(t, err)
	n, err := parseStatStart([]byte("42 (we ird) ) R " + strings.Repeat("0 ", 18) + "777 0 0"))
	require.NoError(t, err)
	assert.Equal(t, uint64(777), n)
}
