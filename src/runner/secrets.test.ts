import { describe, expect, it } from 'vitest';
import { createMemoryDriver } from '../storage/index.ts';
import { createSecretStore, parseValueFrom, SecretError } from './secrets.ts';

describe('parseValueFrom', () => {
  it('takes a bare name, a Secrets Manager ARN (with json-key) and an SSM parameter ARN', () => {
    expect(parseValueFrom('db-password')).toEqual({ name: 'db-password' });
    expect(parseValueFrom('arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf')).toEqual({
      name: 'prod/db-AbCdEf',
    });
    expect(parseValueFrom('arn:aws:secretsmanager:us-east-1:1:secret:prod/db:password::')).toEqual({
      name: 'prod/db',
      jsonKey: 'password',
    });
    expect(parseValueFrom('arn:aws:ssm:us-east-1:1:parameter/token')).toEqual({ name: 'token' });
    expect(parseValueFrom('arn:aws:ssm:us-east-1:1:parameter/team/token')).toEqual({ name: '/team/token' });
  });

  it('refuses version stages it cannot honour', () => {
    expect(() => parseValueFrom('arn:aws:secretsmanager:r:1:secret:db:password:AWSPREVIOUS:')).toThrow(
      /version stages/,
    );
  });
});

describe('secret store', () => {
  const store = () =>
    createSecretStore(createMemoryDriver(), { region: 'us-east-1', accountId: '000000000000' });

  it('stores, lists without values, resolves, and removes', async () => {
    const s = store();
    const { info, created } = await s.put('prod/db', '{"password":"hunter2","port":5432}', 'the database');
    expect(created).toBe(true);
    expect(info).toMatchObject({ name: 'prod/db', description: 'the database' });
    expect(info.arn).toBe('arn:aws:secretsmanager:us-east-1:000000000000:secret:prod/db');
    expect(JSON.stringify(await s.list())).not.toContain('hunter2');
    expect(await s.resolve('prod/db')).toContain('hunter2');
    expect(await s.resolve(`${info.arn}:password::`)).toBe('hunter2');
    expect(await s.resolve(`${info.arn}-AbCdEf:port::`)).toBe('5432');
    expect((await s.put('prod/db', 'x')).created).toBe(false);
    expect((await s.get('prod/db')).description).toBe('the database');
    await s.remove('prod/db');
    await expect(s.resolve('prod/db')).rejects.toThrow(/does not exist/);
  });

  it('names what is wrong', async () => {
    const s = store();
    await expect(s.put('bad name', 'x')).rejects.toBeInstanceOf(SecretError);
    await s.put('plain', 'not json');
    await expect(s.resolve('arn:aws:secretsmanager:r:1:secret:plain:k::')).rejects.toThrow(/not JSON/);
    await s.put('doc', '{"a":1}');
    await expect(s.resolve('arn:aws:secretsmanager:r:1:secret:doc:b::')).rejects.toThrow(/no key 'b'/);
  });
});
