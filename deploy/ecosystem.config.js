// remediator under pm2. From the repository, after scripts/bootstrap (which creates .venv):
//   pm2 start deploy/ecosystem.config.js && pm2 save
//   pm2 startup            # once: the pm2-<user> systemd unit that brings pm2 back after a reboot
//   pm2 logs remediator
// Settings come from the repository's .env (the app runs with the repository as its working
// directory), or from the environment pm2 was started with.
const path = require("path");

const root = path.resolve(__dirname, "..");

module.exports = {
  apps: [
    {
      name: "remediator",
      cwd: root,
      // The console script from .venv: it has its own #! line, so pm2 must not run it with node.
      script: path.join(root, ".venv", "bin", "remediator"),
      args: "run",
      interpreter: "none",
      // One process only: Telegram allows one poller per bot token, and the queues live in one SQLite file.
      exec_mode: "fork",
      instances: 1,
      autorestart: true,
      // Exit 2 means bad settings (the log says which): restarting would fail the same way.
      stop_exit_codes: [2],
      exp_backoff_restart_delay: 1000,
      min_uptime: "10s",
      max_restarts: 20,
      // pm2 stops with SIGINT; the bot lets a running fix finish for up to 20 s, then drains.
      kill_timeout: 60000,
      time: true,
      env: {
        PYTHONUNBUFFERED: "1",
      },
    },
  ],
};
