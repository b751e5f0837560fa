# Shared by the scripts (source it): installing Debian packages and picking free ports.

# Installs Debian packages (as root, or with sudo), refreshing the package lists if needed.
apt_install() {
    if [ "$(id -u)" = 0 ]; then apt-get install -y "$@" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$@" >/dev/null; }
    else sudo apt-get install -y "$@" >/dev/null; fi
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
