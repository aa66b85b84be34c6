"""Symlink-safe file operations confined to one directory tree.

Standard library only, no package imports: the bubblewrap backend calls these on the host, and the Docker
backend ships this very source into the container (``python3 -c``) and runs it there, so both backends apply
the same rules. A path is resolved with ``realpath`` and must land inside the root; the resolved path is then
walked component by component with ``O_NOFOLLOW`` from a directory fd, so a symlink swapped in between the
check and the open (a race the sandboxed code could try) makes the call fail instead of escaping.

``allowed`` (fnmatch patterns, the grant's ``paths``) is checked on the RESOLVED path, in the same call that
opens it: ``tests/up/calc.py`` with ``tests/up -> ..`` is ``calc.py``, and ``tests/*`` does not allow it.
"""

import errno
import fnmatch
import json
import os
import stat
import sys


class Rejected(Exception):
    pass


class OutOfScope(Rejected):
    pass


class TooLarge(Exception):
    pass


def _in_scope(path, allowed):
    # Same meaning as agentops.tools.scopes.path_allowed: no patterns means no path restriction.
    if not allowed:
        return True
    return any(fnmatch.fnmatchcase(path, p) for p in allowed)


def _require_scope(parts, allowed, rel, directory=False):
    if not allowed:
        return
    real = "/".join(parts) or "."
    if _in_scope(real, allowed) or (directory and _in_scope(real + "/", allowed)):
        return
    if real == "/".join(_check_lexical(rel)):
        raise OutOfScope("path %r is outside the allowed paths" % rel)
    raise OutOfScope("path %r resolves through a symlink to %r, outside the allowed paths" % (rel, real))


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _check_lexical(rel):
    if "\x00" in rel:
        raise Rejected("path contains a NUL byte")
    if rel.startswith("/"):
        raise Rejected("absolute path: %r" % rel)
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Rejected("path may not contain '..': %r" % rel)
    return parts


def _resolve(root, rel):
    """Return the components of ``rel`` after resolving symlinks, checked to stay inside ``root``."""
    _check_lexical(rel)
    root_real = os.path.realpath(root)
    full = os.path.realpath(os.path.join(root_real, rel))
    if full != root_real and not full.startswith(root_real + os.sep):
        raise Rejected("path resolves outside the workspace: %r" % rel)
    parts = [p for p in os.path.relpath(full, root_real).split(os.sep) if p not in ("", ".")]
    if parts and parts[0] == ".git":
        raise Rejected("path inside .git is not allowed: %r" % rel)
    return root_real, parts


def _walk_dirs(root_real, parts, create=False, owner=None):
    """Open the directory ``root/parts...`` without following any symlink; return its fd."""
    fd = os.open(root_real, _DIR_FLAGS)
    try:
        for name in parts:
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(name, 0o755, dir_fd=fd)
                if owner is not None:
                    os.chown(name, owner[0], owner[1], dir_fd=fd, follow_symlinks=False)
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Rejected("path component is a symlink or not a directory: %r" % name)
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_bytes(root, rel, max_bytes, allowed=None):
    root_real, parts = _resolve(root, rel)
    if not parts:
        raise IsADirectoryError(rel)
    _require_scope(parts, allowed, rel)
    dfd = _walk_dirs(root_real, parts[:-1])
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Rejected("path is a symlink that changed: %r" % rel)
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(rel)
        if not stat.S_ISREG(st.st_mode):
            raise Rejected("not a regular file: %r" % rel)
        if st.st_size > max_bytes:
            raise TooLarge("%s is %d bytes, more than the limit of %d" % (rel, st.st_size, max_bytes))
        chunks, size = [], 0
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            size += len(b)
            if size > max_bytes:
                raise TooLarge("%s is more than the limit of %d bytes" % (rel, max_bytes))
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_bytes(root, rel, data, max_bytes, owner=None, allowed=None):
    if len(data) > max_bytes:
        raise TooLarge("content is %d bytes, more than the limit of %d" % (len(data), max_bytes))
    _check_lexical(rel)
    root_real = os.path.realpath(root)
    # The parent must resolve inside the root; the last component must not be a symlink that escapes.
    parent_rel, _, name = rel.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise Rejected("not a file path: %r" % rel)
    _, parent_parts = _resolve(root_real, parent_rel or ".")
    target = os.path.join(root_real, *parent_parts, name)
    if os.path.islink(target):
        _, parts = _resolve(root_real, rel)  # raises when the link points outside
        parent_parts, name = parts[:-1], parts[-1]
    if not parent_parts and name == ".git":
        raise Rejected("path inside .git is not allowed: %r" % rel)
    _require_scope(list(parent_parts) + [name], allowed, rel)
    dfd = _walk_dirs(root_real, parent_parts, create=True, owner=owner)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(name, flags, 0o644, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Rejected("path is a symlink: %r" % rel)
            if e.errno == errno.EISDIR:
                raise IsADirectoryError(rel)
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Rejected("not a regular file: %r" % rel)
        if st.st_nlink > 1:
            raise Rejected("refusing to write a file with several hard links: %r" % rel)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
    finally:
        os.close(fd)


def list_files(root, rel=".", limit=100000, allowed=None):
    root_real, parts = _resolve(root, rel)
    if allowed and parts != _check_lexical(rel):
        # Listing through a link: where it leads must itself be granted (a link to the root would otherwise
        # enumerate the whole workspace under a granted name).
        _require_scope(parts, allowed, rel, directory=True)
    start = os.path.join(root_real, *parts)
    if not os.path.isdir(start) or os.path.islink(start):
        if os.path.isfile(start):
            return ["/".join(parts)]
        raise FileNotFoundError(rel)
    out = []
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        if dirpath == root_real:
            dirnames[:] = [d for d in dirnames if d != ".git"]
        dirnames.sort()
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                filenames.append(d)
        relbase = os.path.relpath(dirpath, root_real)
        for f in filenames:
            path = f if relbase == "." else relbase + "/" + f
            if not _in_scope(path, allowed):
                continue
            out.append(path)
            if len(out) > limit:
                raise TooLarge("more than %d files" % limit)
    return sorted(out)


def resolve(root, rel, allowed=None):
    _, parts = _resolve(root, rel)
    _require_scope(parts, allowed, rel, directory=True)
    return "/".join(parts) or "."


def links_out_of_scope(root, rels, allowed=None):
    """Those of ``rels`` that are symlinks leading outside the root, into .git, or outside ``allowed``."""
    root_real = os.path.realpath(root)
    bad = []
    for rel in rels:
        try:
            parts = _check_lexical(rel)
        except Rejected:
            bad.append(rel)
            continue
        path = os.path.join(root_real, *parts)
        if not os.path.islink(path):
            continue
        full = os.path.realpath(path)
        if full == root_real or not full.startswith(root_real + os.sep):
            bad.append(rel)
            continue
        real = os.path.relpath(full, root_real)
        if real.split(os.sep)[0] == ".git" or not _in_scope(real, allowed):
            bad.append(rel)
    return bad


# ---- in-container entry point (Docker backend): python3 -c SOURCE OP ROOT REL MAX [ALLOWED_JSON] -----

OPS = ("read", "write", "list", "resolve", "links")


def _main(argv):
    op, root, rel, max_bytes = argv[0], argv[1], argv[2], int(argv[3])
    allowed = json.loads(argv[4]) if len(argv) > 4 else None
    try:
        if op == "read":
            sys.stdout.buffer.write(read_bytes(root, rel, max_bytes, allowed))
        elif op == "write":
            data = sys.stdin.buffer.read(max_bytes + 1)
            write_bytes(root, rel, data, max_bytes, allowed=allowed)
        elif op == "list":
            sys.stdout.write(json.dumps(list_files(root, rel, allowed=allowed)))
        elif op == "resolve":
            sys.stdout.write(json.dumps(resolve(root, rel, allowed)))
        elif op == "links":
            sys.stdout.write(json.dumps(links_out_of_scope(root, json.loads(rel), allowed)))
        else:
            raise ValueError(op)
    except OutOfScope as e:
        sys.stderr.write(json.dumps({"error": "out_of_scope", "message": str(e)}))
        return 8
    except Rejected as e:
        sys.stderr.write(json.dumps({"error": "rejected", "message": str(e)}))
        return 3
    except TooLarge as e:
        sys.stderr.write(json.dumps({"error": "too_large", "message": str(e)}))
        return 4
    except FileNotFoundError as e:
        sys.stderr.write(json.dumps({"error": "not_found", "message": str(e)}))
        return 5
    except IsADirectoryError as e:
        sys.stderr.write(json.dumps({"error": "is_a_directory", "message": str(e)}))
        return 6
    except OSError as e:
        sys.stderr.write(json.dumps({"error": "os_error", "message": str(e)}))
        return 7
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] in OPS:
    sys.exit(_main(sys.argv[1:]))
