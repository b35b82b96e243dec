"""The distribution's own installed programs: which package owns a file, which security fixes
are waiting for it (``opus-bpf pending``), and a rebuild of exactly the installed version that
proves itself to be the installed binary (``opus-bpf build --installed``). Debian/dpkg only."""
