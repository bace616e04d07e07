"""Reading Rust source for the checks in .ci/ (layers, sizes)."""
import re
import sys


def strip(text):
    """The text with comments, strings and character literals blanked
    (newlines kept), read in one pass as the compiler does."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        two = text[i:i + 2]
        if two == "//":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif two == "/*":
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif re.match(r'b?r#*"', text[i:i + 40]) and not re.match(r"\w", text[i - 1:i] or " "):
            m = re.match(r'(b?r)(#*)"', text[i:])
            end = '"' + m.group(2)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"' or (two == 'b"' and not re.match(r"\w", text[i - 1:i] or " ")):
            i += 1 if c == '"' else 2
            start = i
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", start, i))
            i += 1
        elif c == "'":
            # A character literal ('a', '\n', '\u{1F600}', b'x'), not a lifetime.
            m = re.match(r"'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'", text[i:])
            if m:
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def close_of(text, open_at):
    """Where the brace opened at `open_at` closes (in stripped text)."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return len(text) - 1


def prove_on_fixture(check, fixture, found, expected):
    """Exits 1 unless `found`, what `check` reported on its bad fixture,
    is exactly `expected`: a check that cannot fail proves nothing."""
    if set(found) == expected:
        return
    print(f"the {check} misreads its bad fixture (.ci/fixtures/{fixture}):")
    for line in sorted(expected - set(found)):
        print(f"  missed:   {line}")
    for line in sorted(set(found) - expected):
        print(f"  invented: {line}")
    sys.exit(1)
