# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_tftplb_global_optspecs
    string join \n log-format= h/help V/version
end

function __fish_tftplb_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_tftplb_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_tftplb_using_subcommand
    set -l cmd (__fish_tftplb_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c tftplb -n "__fish_tftplb_needs_command" -l log-format -d 'Log format' -r -f -a "text\t''
json\t''"
complete -c tftplb -n "__fish_tftplb_needs_command" -s h -l help -d 'Print help'
complete -c tftplb -n "__fish_tftplb_needs_command" -s V -l version -d 'Print version'
complete -c tftplb -n "__fish_tftplb_needs_command" -f -a "run" -d 'Run the load balancer'
complete -c tftplb -n "__fish_tftplb_needs_command" -f -a "check" -d 'Validate a configuration file: exit 0, or print every problem and exit 78'
complete -c tftplb -n "__fish_tftplb_needs_command" -f -a "health" -d 'Ask the running tftplb whether it can serve (for keepalived\'s vrrp_script): exit 0 when it can, 1 with the reasons when it cannot or does not answer'
complete -c tftplb -n "__fish_tftplb_needs_command" -f -a "demo" -d 'Start three embedded boot servers and a front end on them, until Ctrl-C'
complete -c tftplb -n "__fish_tftplb_needs_command" -f -a "get" -d 'Download a file over TFTP and report what was negotiated (like dig, for TFTP)'
complete -c tftplb -n "__fish_tftplb_needs_command" -f -a "manual" -d 'Write the man pages (tftplb.8, tftplb.toml.5) and shell completions into a directory'
complete -c tftplb -n "__fish_tftplb_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tftplb -n "__fish_tftplb_using_subcommand run" -s c -l config -r -F
complete -c tftplb -n "__fish_tftplb_using_subcommand run" -l log-format -d 'Log format' -r -f -a "text\t''
json\t''"
complete -c tftplb -n "__fish_tftplb_using_subcommand run" -s h -l help -d 'Print help'
complete -c tftplb -n "__fish_tftplb_using_subcommand check" -s c -l config -r -F
complete -c tftplb -n "__fish_tftplb_using_subcommand check" -l log-format -d 'Log format' -r -f -a "text\t''
json\t''"
complete -c tftplb -n "__fish_tftplb_using_subcommand check" -s h -l help -d 'Print help'
complete -c tftplb -n "__fish_tftplb_using_subcommand health" -s c -l config -d 'Its configuration, for the admin listener\'s address' -r -F
complete -c tftplb -n "__fish_tftplb_using_subcommand health" -l admin -d 'The admin listener to ask (default: `[admin] listen` of the configuration)' -r
complete -c tftplb -n "__fish_tftplb_using_subcommand health" -l timeout -d 'Seconds to wait for the answer' -r
complete -c tftplb -n "__fish_tftplb_using_subcommand health" -l log-format -d 'Log format' -r -f -a "text\t''
json\t''"
complete -c tftplb -n "__fish_tftplb_using_subcommand health" -s h -l help -d 'Print help'
complete -c tftplb -n "__fish_tftplb_using_subcommand demo" -l listen -d 'Front-end address' -r
complete -c tftplb -n "__fish_tftplb_using_subcommand demo" -l admin -d 'Status page, admin API and metrics address (port 0: any free port)' -r
complete -c tftplb -n "__fish_tftplb_using_subcommand demo" -l log-format -d 'Log format' -r -f -a "text\t''
json\t''"
complete -c tftplb -n "__fish_tftplb_using_subcommand demo" -s h -l help -d 'Print help'
complete -c tftplb -n "__fish_tftplb_using_subcommand get" -s o -l output -d 'Where to write the file ("-" for stdout); by default it is only measured' -r -F
complete -c tftplb -n "__fish_tftplb_using_subcommand get" -l blksize -r
complete -c tftplb -n "__fish_tftplb_using_subcommand get" -l windowsize -r
complete -c tftplb -n "__fish_tftplb_using_subcommand get" -l timeout -d 'Seconds to wait before retransmitting' -r
complete -c tftplb -n "__fish_tftplb_using_subcommand get" -l retries -r
complete -c tftplb -n "__fish_tftplb_using_subcommand get" -l log-format -d 'Log format' -r -f -a "text\t''
json\t''"
complete -c tftplb -n "__fish_tftplb_using_subcommand get" -l tsize -d 'Ask the server for the file size (tsize option)'
complete -c tftplb -n "__fish_tftplb_using_subcommand get" -s h -l help -d 'Print help'
complete -c tftplb -n "__fish_tftplb_using_subcommand manual" -l out -r -F
complete -c tftplb -n "__fish_tftplb_using_subcommand manual" -l log-format -d 'Log format' -r -f -a "text\t''
json\t''"
complete -c tftplb -n "__fish_tftplb_using_subcommand manual" -s h -l help -d 'Print help'
complete -c tftplb -n "__fish_tftplb_using_subcommand help; and not __fish_seen_subcommand_from run check health demo get manual help" -f -a "run" -d 'Run the load balancer'
complete -c tftplb -n "__fish_tftplb_using_subcommand help; and not __fish_seen_subcommand_from run check health demo get manual help" -f -a "check" -d 'Validate a configuration file: exit 0, or print every problem and exit 78'
complete -c tftplb -n "__fish_tftplb_using_subcommand help; and not __fish_seen_subcommand_from run check health demo get manual help" -f -a "health" -d 'Ask the running tftplb whether it can serve (for keepalived\'s vrrp_script): exit 0 when it can, 1 with the reasons when it cannot or does not answer'
complete -c tftplb -n "__fish_tftplb_using_subcommand help; and not __fish_seen_subcommand_from run check health demo get manual help" -f -a "demo" -d 'Start three embedded boot servers and a front end on them, until Ctrl-C'
complete -c tftplb -n "__fish_tftplb_using_subcommand help; and not __fish_seen_subcommand_from run check health demo get manual help" -f -a "get" -d 'Download a file over TFTP and report what was negotiated (like dig, for TFTP)'
complete -c tftplb -n "__fish_tftplb_using_subcommand help; and not __fish_seen_subcommand_from run check health demo get manual help" -f -a "manual" -d 'Write the man pages (tftplb.8, tftplb.toml.5) and shell completions into a directory'
complete -c tftplb -n "__fish_tftplb_using_subcommand help; and not __fish_seen_subcommand_from run check health demo get manual help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
