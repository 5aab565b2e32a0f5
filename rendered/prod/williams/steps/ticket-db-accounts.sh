set -euo pipefail
IFS= read -r pw || [ -n "$pw" ]
[[ "$pw" =~ ^[A-Za-z0-9._+-]{8,128}$ ]] || { echo "mailinfra:otrsDbPassword: must be 8-128 characters of A-Z a-z 0-9 . _ + -" >&2; exit 1; }
clients=('203.0.113.10' '203.0.113.12' 'localhost')
{
  echo "DROP USER IF EXISTS 'Debian-exim'@'localhost';"
  for c in "${clients[@]}"; do
    echo "CREATE USER IF NOT EXISTS 'exim'@'$c' IDENTIFIED BY '$pw';"
    echo "ALTER USER 'exim'@'$c' IDENTIFIED BY '$pw';"
    echo "REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'exim'@'$c';"
    echo "GRANT SELECT ON otrs.system_address TO 'exim'@'$c';"
  done
} | mariadb --batch
# an address that is no longer a relay loses its account
mariadb --batch --skip-column-names -e "SELECT host FROM mysql.user WHERE user='exim'" | while read -r h; do
  case " ${clients[*]} " in *" $h "*) ;; *) echo "dropping exim@$h"; mariadb -e "DROP USER 'exim'@'$h'" ;; esac
done

